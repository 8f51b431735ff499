"""`/v1/files`: upload (multipart, `purpose=fine-tune`), list, retrieve, content, delete.

Bytes are stored as `DATA_DIR/files/FILE_ID.jsonl` (see `Settings.file_path`): the client's file
name is metadata only, so no name can reach outside the store. Uploads over
`Settings.max_upload_bytes` answer 413 (`BodyLimit` stops reading at the limit, with or without a
Content-Length). Training files are checked when a job uses them (`plw.serve.validation`), as
OpenAI does, so an upload never fails for its content.
"""

from __future__ import annotations

import os
import shutil
from typing import Literal, Optional

from fastapi import APIRouter, Depends, File as FormFile, Form, Query, UploadFile
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException
from sqlalchemy import select

from plw.serve.auth import Caller, current_caller
from plw.serve.db import File, new_id
from plw.serve.errors import APIError, error_response, not_found
from plw.serve.paging import cursor_page
from plw.serve.schemas import Deleted, FileObject, ListPage

router = APIRouter(prefix="/v1", tags=["files"])


def file_object(row: File) -> FileObject:
    return FileObject(id=row.id, bytes=row.bytes, created_at=row.created_at, filename=row.filename,
                      purpose=row.purpose, status=row.status, status_details=row.status_details)


def get_file(caller: Caller, file_id: str, param: str = "file_id") -> File:
    """The caller's file `file_id`, or 404 (also for another project's file)."""
    with caller.state.db.session() as s:
        row = s.get(File, file_id)
    if row is None or row.project_id != caller.project_id:
        raise not_found("file", file_id, param)
    return row


@router.post("/files", response_model=FileObject)
def upload_file(file: UploadFile = FormFile(...), purpose: Literal["fine-tune"] = Form(...),
                caller: Caller = Depends(current_caller)) -> FileObject:
    settings = caller.state.settings
    file_id = new_id("file")
    dest = settings.file_path(file_id)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{file_id}.tmp")
    size = 0
    try:
        with open(tmp, "wb") as out:
            while chunk := file.file.read(1 << 20):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise APIError(413, f"file is larger than the server's limit of "
                                        f"{settings.max_upload_bytes} bytes", param="file")
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    name = os.path.basename((file.filename or "upload.jsonl").replace("\\", "/"))[:512] or "upload.jsonl"
    row = File(id=file_id, project_id=caller.project_id, filename=name, purpose=purpose, bytes=size)
    with caller.state.db.session() as s:
        s.add(row)
    return file_object(row)


def files_page(caller: Caller, after: str | None, limit: int, order: str, purpose: str | None) -> ListPage[FileObject]:
    query = select(File).where(File.project_id == caller.project_id)
    if purpose:
        query = query.where(File.purpose == purpose)
    with caller.state.db.session() as s:
        rows, more = cursor_page(s, query, File, File.created_ns, after=after, limit=limit,
                                 descending=order == "desc", after_scope=File.project_id == caller.project_id)
    data = [file_object(r) for r in rows]
    return ListPage[FileObject](data=data, has_more=more, first_id=data[0].id if data else None,
                                last_id=data[-1].id if data else None)


# Read routes are async and read through `Database.read` (inline for SQLite, one thread hop for a
# networked database): FastAPI would run a sync route, and then its response validation, each in
# a thread of its own (GIL hand-offs under load).

@router.get("/files", response_model=ListPage[FileObject])
async def list_files(after: Optional[str] = Query(None, max_length=64), limit: int = Query(10000),
                     order: str = Query("desc", pattern="^(asc|desc)$"), purpose: Optional[str] = Query(None),
                     caller: Caller = Depends(current_caller)) -> ListPage[FileObject]:
    return await caller.state.db.read(files_page, caller, after, limit, order, purpose)


@router.get("/files/{file_id}", response_model=FileObject)
async def retrieve_file(file_id: str, caller: Caller = Depends(current_caller)) -> FileObject:
    return file_object(await caller.state.db.read(get_file, caller, file_id))


@router.get("/files/{file_id}/content", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
def file_content(file_id: str, caller: Caller = Depends(current_caller)):
    row = get_file(caller, file_id)
    path = caller.state.settings.file_path(row.id)
    if not path.is_file():
        raise not_found("file", file_id, "file_id")
    return FileResponse(path, media_type="application/octet-stream", filename=row.filename)


@router.delete("/files/{file_id}", response_model=Deleted)
def delete_file(file_id: str, caller: Caller = Depends(current_caller)) -> Deleted:
    row = get_file(caller, file_id)
    with caller.state.db.session() as s:
        s.delete(s.get(File, row.id))
    caller.state.settings.file_path(row.id).unlink(missing_ok=True)
    return Deleted(id=row.id, object="file", deleted=True)


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit` bytes, before the multipart parser spools it."""

    def __init__(self, app, limit_of):
        self.app, self.limit_of = app, limit_of

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        shown = self.limit_of(scope)
        limit = shown + 64 * 1024  # room for the multipart framing and the purpose field
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _too_large(send, shown)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:  # FastAPI re-raises HTTPException from body parsing; errors.py renders it
                raise HTTPException(413, f"request body is larger than the server's limit ({shown} bytes)")
            return message

        await self.app(scope, counting_receive, send)


async def _too_large(send, limit: int) -> None:
    response = error_response(413, f"request body is larger than the server's limit ({limit} bytes)")
    await response({"type": "http"}, None, send)


def copy_file(src, dest) -> None:
    """Copy an uploaded file into a job folder (a job keeps its data even if the file is deleted)."""
    shutil.copyfile(src, dest)
