"""Evaluation: pure metric functions, splits, and one full-ranking evaluator for every model."""
