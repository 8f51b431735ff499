from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_helpers import Server, create_key  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One server (2 workers) with two projects' keys, shared by a module's tests."""
    root = tmp_path_factory.mktemp("serve")
    data = root / "data"
    key, other = create_key(data, "acme"), create_key(data, "rival")
    server = Server(data, "--workers", "2", "--lease-seconds", "4").start()
    server.key, server.other_key = key, other
    yield server
    server.stop()
