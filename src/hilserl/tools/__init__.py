"""Offline tools: checkpoints, inference, pretraining, bringup and plots."""
