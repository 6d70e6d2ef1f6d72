"""Evaluation: text metrics and held-out evaluation under listening conditions."""
