"""Replay: frames stored once, n-step sampling, online + intervention buffers, the transition wire format."""
