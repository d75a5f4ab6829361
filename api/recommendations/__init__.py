"""The recommendation serving machinery, with no GraphQL or HTTP import."""
