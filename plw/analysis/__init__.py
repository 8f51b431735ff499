"""plw.analysis."""
