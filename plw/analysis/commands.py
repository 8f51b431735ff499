"""CLI commands of plw.analysis (registered onto the top-level app by plw.cli)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`."""
