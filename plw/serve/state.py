"""What every request can reach: the settings and the database (`request.app.state.plw`)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from plw.serve.db import Database
from plw.serve.settings import Settings


@dataclass
class ServeState:
    settings: Settings
    db: Database


def get_state(request: Request) -> ServeState:
    """FastAPI dependency: the app's `ServeState`."""
    return request.app.state.plw
