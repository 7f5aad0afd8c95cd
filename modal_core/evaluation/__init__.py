"""Evaluation: deterministic judges of what a model understands and generates."""
