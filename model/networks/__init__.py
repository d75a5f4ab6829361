"""The PyTorch networks, one module per family."""
