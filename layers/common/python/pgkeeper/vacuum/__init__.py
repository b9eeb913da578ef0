"""The vacuum job's parts: which tables need what (selection), the carry-over between runs (backlog),
carrying it out in time (runner), and the optional rebuild of invalid indexes (reindex)."""
