"""Evaluation: baselines and metrics for held-out genome likelihood."""
