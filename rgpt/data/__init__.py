"""Data: readers of the real formats, the synthetic corpus, validation, balancing, conversations."""
