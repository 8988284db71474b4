"""Experiments: one pipeline over a BEIR folder, and the reproduction of experiment files."""
