"""Evaluation: benchmark metrics, the evaluation runner, and the quick held-out check."""
