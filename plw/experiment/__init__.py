"""plw.experiment."""
