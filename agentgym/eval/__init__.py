"""Evaluation: the eval runner, metrics and reports."""
