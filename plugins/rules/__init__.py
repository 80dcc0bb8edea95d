"""Correlation rules: local findings plus server evidence become verdicts (see README.md)."""
