"""Store clients and the embedded servers: PostgreSQL, MongoDB, the graph."""
