"""plw.data: records in, weighted tokens out.

Loading and validation (`records`), the built-in synthetic data (`synthetic`), templates
(`templates`), PLW token weights (`encode`), Table-1 statistics (`stats`), prompt inversion
(`inversion`) and tokenizers (`tokenizer`). Nothing here imports torch or transformers at
import time.
"""

from plw.data.encode import TokenizeReport, encode_record, pad_batch, tokenize_dataset
from plw.data.records import Record, LoadReport, load_records, read_records

__all__ = ["Record", "LoadReport", "load_records", "read_records", "encode_record", "tokenize_dataset",
           "TokenizeReport", "pad_batch"]
