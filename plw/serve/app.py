"""`create_app(settings) -> FastAPI`: the service, its routers, error handlers and worker pool.

To add endpoints, write a module with an `APIRouter` named `router` whose routes depend on
`plw.serve.auth.current_caller`, and add its module path to `ROUTERS` (one line). The OpenAPI
schema is at `/openapi.json`; `GET /health` needs no key.
"""

from __future__ import annotations

import importlib
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from plw import __version__
from plw.serve import models as models_module
from plw.serve.db import Database
from plw.serve.errors import install_handlers
from plw.serve.files import BodyLimit
from plw.serve.settings import Settings
from plw.serve.state import ServeState

ROUTERS = [
    "plw.serve.files",
    "plw.serve.jobs",
    "plw.serve.models",
    "plw.serve.completions",
    "plw.serve.dashboard",
]


def create_app(settings: Settings, *, routers: list[str] | None = None) -> FastAPI:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    state = ServeState(settings=settings, db=Database(settings.database_url))
    models_module.SERVER_START = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from plw.serve.worker import WorkerPool

        pool = WorkerPool(state) if settings.run_workers and settings.workers > 0 else None
        if pool is not None:
            pool.start()
        try:
            yield
        finally:
            if pool is not None:
                pool.stop()
            inference = getattr(app.state, "inference", None)  # plw.serve.completions' backend
            if inference is not None:
                inference.close()
            state.db.dispose()

    app = FastAPI(title="plw serve", version=__version__, lifespan=lifespan,
                  description="A fine-tuning service with OpenAI's fine-tuning API and a prompt loss weight.")
    app.state.plw = state
    install_handlers(app)
    app.add_middleware(BodyLimit, limit_of=lambda _scope: settings.max_upload_bytes)
    for name in ROUTERS if routers is None else routers:
        app.include_router(importlib.import_module(name).router)

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        return {"status": "ok"}

    return app
