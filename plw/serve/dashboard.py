"""The dashboard at `/`: server-rendered HTML (Jinja2 templates, inline SVG charts, no JavaScript).

Sign in with an API key (kept in an HTTP-only, SameSite=Strict cookie); the pages show only that
key's project: its jobs with status and hyper-parameters (the PLW first), and for one job its loss
curves, events, checkpoints and a playground that sends one chat message to its fine-tuned model.
The pages call the same functions as the `/v1` routes, so they see exactly what the API shows.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from plw.serve.auth import Caller, current_caller
from plw.serve.charts import loss_chart
from plw.serve.errors import APIError
from plw.serve.state import get_state

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
templates.env.filters["timestamp"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else ""
templates.env.filters["num"] = lambda v: "" if v is None else f"{v:.4g}"
COOKIE = "plw_key"
PLAYGROUND_MAX_TOKENS = 64


async def _caller(request: Request, key: str | None = None) -> Caller | None:
    """The project of `key` (else of the cookie's key), or None when it is not a valid key."""
    key = key if key is not None else request.cookies.get(COOKIE)
    if not key:
        return None
    try:
        caller = current_caller(creds=HTTPAuthorizationCredentials(scheme="Bearer", credentials=key),
                                state=get_state(request))
        return await caller if inspect.isawaitable(caller) else caller
    except APIError:
        return None


def _signin(request: Request, error: str | None = None, status: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, "signin.html", {"error": error}, status_code=status)


@router.get("/", response_class=HTMLResponse)
async def home(request: Request):
    caller = await _caller(request)
    if caller is None:
        return _signin(request)
    from plw.serve.jobs import jobs_page

    jobs = (await run_in_threadpool(jobs_page, caller, None, 100)).data
    return templates.TemplateResponse(request, "jobs.html", {"caller": caller, "jobs": jobs})


@router.post("/signin")
async def signin(request: Request, api_key: str = Form("")):
    key = api_key.strip()
    if await _caller(request, key) is None:
        return _signin(request, "That API key is not valid (create one with `plw keys create`).", 401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, key, httponly=True, samesite="strict")
    return response


@router.get("/signout")
def signout():
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE)
    return response


def _job_page(request: Request, caller: Caller, job_id: str, **extra) -> HTMLResponse:
    from plw.serve.jobs import events_page, job_metrics, job_view, list_checkpoints

    try:
        job = job_view(caller, job_id)
    except APIError as err:
        return templates.TemplateResponse(request, "missing.html", {"caller": caller, "message": err.message},
                                          status_code=err.status)
    events = list(reversed(events_page(caller, job_id, None, 1000).data))
    checkpoints = list_checkpoints(job_id, after=None, limit=100, caller=caller).data
    chart = loss_chart(job_metrics(caller.state, job_id))
    return templates.TemplateResponse(request, "job.html", {
        "caller": caller, "job": job, "events": events, "checkpoints": checkpoints, "chart": chart, **extra})


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(job_id: str, request: Request):
    caller = await _caller(request)
    if caller is None:
        return RedirectResponse("/", status_code=303)
    return await run_in_threadpool(_job_page, request, caller, job_id)


@router.post("/jobs/{job_id}/playground", response_class=HTMLResponse)
async def playground(job_id: str, request: Request, message: str = Form("")):
    """One chat message to the job's fine-tuned model, answered on the job's page."""
    from plw.serve.completions import ChatRequest, chat_completions
    from plw.serve.jobs import job_view

    caller = await _caller(request)
    if caller is None:
        return RedirectResponse("/", status_code=303)
    answer, error = None, None
    try:
        model = (await run_in_threadpool(job_view, caller, job_id)).fine_tuned_model
        if not model:
            raise APIError(400, "this job has no fine-tuned model yet")
        if not message.strip():
            raise APIError(400, "write a message first")
        body = ChatRequest(model=model, messages=[{"role": "user", "content": message}],
                           max_tokens=PLAYGROUND_MAX_TOKENS, temperature=0)
        result = await chat_completions(body, request, caller)
        answer = result["choices"][0]["message"]["content"]
    except APIError as err:
        error = err.message
    return await run_in_threadpool(_job_page, request, caller, job_id, message=message, answer=answer,
                                   answer_error=error)
