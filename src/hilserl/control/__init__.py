"""Actor-side core in plain Python: interventions and episode recording."""
