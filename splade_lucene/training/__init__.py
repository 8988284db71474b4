"""Training: settings, data, objective, checkpoints and the loop."""
