"""Lab model module (being written)."""
