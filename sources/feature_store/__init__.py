"""Feast glue: the repository's environment, the offline join, apply and materialize."""
