"""Training: options, the loop, one module per model, the pipeline that runs them."""
