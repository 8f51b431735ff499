"""API keys and the project a request acts for.

Contract for route authors (other routers of plw.serve rely on it):

    from fastapi import Depends
    from plw.serve.auth import Caller, current_caller

    @router.get("/v1/things/{id}")
    def get_thing(id: str, caller: Caller = Depends(current_caller)):
        caller.project_id      # the project of the request's API key
        caller.project_name
        caller.state           # ServeState: settings, db (plw.serve.state)

`current_caller` answers 401 in OpenAI's error shape when `Authorization: Bearer KEY` is missing,
unknown or revoked. Every `/v1` route depends on it; objects of other projects must answer 404
exactly as unknown ids do (`plw.serve.errors.not_found`).

Keys are `plw-` + 43 random URL-safe characters; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from plw.errors import PLWError
from plw.serve.db import ApiKey, Database, Project, new_id
from plw.serve.errors import APIError
from plw.serve.state import ServeState, get_state

PROJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_bearer = HTTPBearer(auto_error=False, description="An API key from `plw keys create`.")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(db: Database, project: str) -> str:
    """A new key for `project` (created if new); returns the key, which is never stored."""
    if not PROJECT_NAME.fullmatch(project or ""):
        raise PLWError(f"invalid project name {project!r}: letters, digits, _ and -, at most 64, "
                       "starting with a letter or digit", field="--project")
    key = "plw-" + secrets.token_urlsafe(32)
    with db.session() as s:
        proj = s.scalar(select(Project).where(Project.name == project))
        if proj is None:
            proj = Project(id=new_id("proj"), name=project)
            s.add(proj)
            s.flush()
        s.add(ApiKey(id=key[:12], project_id=proj.id, sha256=hash_key(key)))
    return key


@dataclass(frozen=True)
class Caller:
    project_id: str
    project_name: str
    state: ServeState


KEY_CACHE_S = 5.0  # a revoked key stops working within this many seconds
_cache: dict[tuple[int, str], tuple[float, str, str]] = {}  # (database, key hash) -> project


def _lookup(state: ServeState, digest: str) -> tuple[str, str] | None:
    with state.db.session() as s:
        row = s.execute(select(ApiKey.project_id, Project.name).join(Project, Project.id == ApiKey.project_id)
                        .where(ApiKey.sha256 == digest, ApiKey.revoked.is_(False))).first()
    return (row[0], row[1]) if row else None


async def _state(request: Request) -> ServeState:
    # async: FastAPI runs a sync dependency such as get_state in a thread (a GIL hand-off per request)
    return get_state(request)


async def current_caller(creds: HTTPAuthorizationCredentials | None = Depends(_bearer),
                         state: ServeState = Depends(_state)) -> Caller:
    if creds is None or not creds.credentials:
        raise APIError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' "
                            "(create one with `plw keys create`).", code="missing_api_key")
    digest = hash_key(creds.credentials)
    slot = (id(state.db), digest)
    hit = _cache.get(slot)
    if hit is not None and hit[0] > time.monotonic():
        return Caller(project_id=hit[1], project_name=hit[2], state=state)
    # Known keys are cached briefly: most requests then skip the database read.
    found = await state.db.read(_lookup, state, digest)
    if found is None:
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[slot] = (time.monotonic() + KEY_CACHE_S, *found)
    return Caller(project_id=found[0], project_name=found[1], state=state)
