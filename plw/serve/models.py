"""`/v1/models`: the server's base models and the caller's fine-tuned ones; `resolve_model`.

Contract for other routers (inference, dashboard):

    from plw.serve.models import resolve_model
    m = resolve_model(caller, "ft:builtin-tiny:acme:demo:abc123")   # or a base model's name
    m.base.name, m.base.source   # the base model as configured (source: directory, .gguf, Hub name,
                                 # builtin:tiny)
    m.path                       # the fine-tuned model's directory (None for a base model): plw
                                 # train's output, safetensors + tokenizer, or a LoRA adapter
                                 # (adapter_config.json) to load on m.base.source
    m.job_id                     # the job that made it (its metrics: plw.serve.jobs.job_metrics)

Unknown ids and other projects' fine-tuned models raise a 404 `APIError` alike.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Depends
from sqlalchemy import select

from plw.serve.auth import Caller, current_caller
from plw.serve.db import FineTunedModel
from plw.serve.errors import APIError, not_found
from plw.serve.schemas import Deleted, ListPage, ModelObject
from plw.serve.settings import BaseModel

router = APIRouter(prefix="/v1", tags=["models"])
SERVER_START = 0  # base models' `created`: set by create_app


@dataclass(frozen=True)
class ResolvedModel:
    id: str
    base: BaseModel
    path: Path | None = None
    job_id: str | None = None

    @property
    def is_adapter(self) -> bool:
        return self.path is not None and (self.path / "adapter_config.json").is_file()


def resolve_model(caller: Caller, model_id: str) -> ResolvedModel:
    settings = caller.state.settings
    if model_id in settings.base_models:
        return ResolvedModel(model_id, settings.base_models[model_id])
    with caller.state.db.session() as s:
        row = s.get(FineTunedModel, model_id)
    if row is None or row.project_id != caller.project_id:
        raise not_found("model", model_id, "model")
    base = settings.base_models.get(row.base_model) or BaseModel(row.base_model, row.base_model)
    return ResolvedModel(row.id, base, settings.data_dir / row.path, row.job_id)


def _base_object(name: str) -> ModelObject:
    return ModelObject(id=name, created=SERVER_START, owned_by="system")


def _ft_object(row: FineTunedModel, owner: str) -> ModelObject:
    return ModelObject(id=row.id, created=row.created_at, owned_by=owner)


def models_page(caller: Caller) -> ListPage[ModelObject]:
    data = [_base_object(n) for n in caller.state.settings.base_models]
    with caller.state.db.session() as s:
        rows = s.scalars(select(FineTunedModel).where(FineTunedModel.project_id == caller.project_id)
                         .order_by(FineTunedModel.created_at))
        data += [_ft_object(r, caller.project_name) for r in rows]
    return ListPage[ModelObject](data=data)


@router.get("/models", response_model=ListPage[ModelObject])
async def list_models(caller: Caller = Depends(current_caller)) -> ListPage[ModelObject]:
    # async through Database.read: a sync route costs FastAPI three thread hops (see plw.serve.files)
    return await caller.state.db.read(models_page, caller)


@router.get("/models/{model_id:path}", response_model=ModelObject)
def retrieve_model(model_id: str, caller: Caller = Depends(current_caller)) -> ModelObject:
    m = resolve_model(caller, model_id)
    if m.path is None:
        return _base_object(m.id)
    with caller.state.db.session() as s:
        return _ft_object(s.get(FineTunedModel, m.id), caller.project_name)


@router.delete("/models/{model_id:path}", response_model=Deleted)
def delete_model(model_id: str, caller: Caller = Depends(current_caller)) -> Deleted:
    m = resolve_model(caller, model_id)
    if m.path is None:
        raise APIError(403, "You cannot delete a base model; only fine-tuned models of your project.",
                       param="model", code="model_not_deletable")
    with caller.state.db.session() as s:
        row = s.get(FineTunedModel, m.id)
        if row is not None:
            s.delete(row)
    shutil.rmtree(m.path, ignore_errors=True)
    return Deleted(id=m.id, object="model", deleted=True)
