"""plw.integrations tests: make the local helper modules importable (pytest runs in importlib mode)."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "train"))
