"""`Database.read`: inline for SQLite (no thread hop per request), the thread pool otherwise."""

from __future__ import annotations

import asyncio
import threading

import pytest

from plw.serve.db import Database


@pytest.mark.parametrize("inline", [True, False])
def test_reads_run_inline_for_sqlite_and_in_the_pool_otherwise(tmp_path, inline):
    db = Database(f"sqlite:///{tmp_path / 'plw.db'}")
    assert db.inline_reads  # a local SQLite file
    db.inline_reads = inline  # as for a networked database when False

    async def main():
        loop_thread = threading.get_ident()
        ran_in = await db.read(threading.get_ident)
        with pytest.raises(KeyError):  # errors reach the route unchanged
            await db.read({}.__getitem__, "missing")
        return ran_in == loop_thread

    assert asyncio.run(main()) is inline
    db.dispose()
