"""The GraphQL object types, one module per family: movie, user, recommendation, paging."""
