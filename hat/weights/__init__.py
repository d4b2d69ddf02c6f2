"""Weights: reading, converting, exporting and atomically writing HAT checkpoints."""
