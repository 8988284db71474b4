"""Evaluation: trec_eval's metrics and reports."""
