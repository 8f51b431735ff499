"""Cursor pagination as OpenAI's lists do it: `after=<id of the last item seen>`, `limit`, `has_more`."""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from plw.serve.errors import APIError

MAX_LIMIT = 10_000


def check_limit(limit: int, default_max: int = MAX_LIMIT) -> int:
    if limit < 1 or limit > default_max:
        raise APIError(400, f"limit must be between 1 and {default_max}", param="limit")
    return limit


def cursor_page(s: Session, query: Select, model, order_col, *, after: str | None, limit: int,
                descending: bool = True, after_scope=None) -> tuple[list, bool]:
    """Rows of `query` ordered by `order_col` (unique per row), starting after the row whose id is
    `after`; returns (rows, has_more). `after_scope` restricts the cursor lookup (e.g. to the
    caller's project) so another project's id is simply unknown."""
    limit = check_limit(limit)
    if after:
        cursor = select(order_col).where(model.id == after)
        if after_scope is not None:
            cursor = cursor.where(after_scope)
        mark = s.scalar(cursor)
        if mark is None:
            raise APIError(400, f"unknown cursor {after!r}", param="after")
        query = query.where(order_col < mark if descending else order_col > mark)
    query = query.order_by(order_col.desc() if descending else order_col.asc()).limit(limit + 1)
    rows = list(s.scalars(query))
    return rows[:limit], len(rows) > limit
