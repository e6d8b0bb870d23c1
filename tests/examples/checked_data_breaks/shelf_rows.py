"""Rows the stairway check inserts before a revision's upgrade."""

ROWS = {"0003": {"authors": [{"name": "Ada Lovelace"}]}}
