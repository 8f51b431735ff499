"""plw.data."""
