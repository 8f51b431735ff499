"""plw.train."""
