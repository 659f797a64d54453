"""Evaluation: scoring model outputs against the forget / retain sets, and the report."""
