"""What a run leaves on disk: the journal (SQLite) and the run directory (artifacts, written atomically)."""
