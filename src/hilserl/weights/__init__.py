"""Weights on disk (checkpoints) and on the wire (one versioned, verified message)."""
