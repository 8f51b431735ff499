"""plw.results: the results table's contract (`schema`) and its store (`store`: per-run result
files and the tidy table rebuilt from them). A neutral layer below `plw.experiment`, which writes
results, and `plw.analysis`, which reads them."""

from plw.results.schema import COLUMNS, DIAGNOSTICS, normalise_row, rows_to_frame
from plw.results.store import ResultsStore, read_table

__all__ = ["COLUMNS", "DIAGNOSTICS", "ResultsStore", "normalise_row", "read_table", "rows_to_frame"]
