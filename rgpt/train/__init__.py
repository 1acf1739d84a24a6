"""Training: the conversation dataset, the stages, and the DeepSpeed engine that runs them."""
