"""The PostgreSQL schema as SQLAlchemy models: systems of record and feature tables."""
