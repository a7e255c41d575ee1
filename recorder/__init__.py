"""Composite recorder (arrives with the recorder issue)."""
