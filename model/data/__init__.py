"""Interactions, point-in-time training frames and their encoding into tensors."""
