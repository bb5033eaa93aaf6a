"""The human-task inbox, server-rendered: the open tasks of the token's tenants, one
task with a form generated from its form_schema (the schema's errors shown inline on
a refused answer), and a run's timeline. The token is presented once on /ui/login
and kept in a same-site cookie."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from flowledger.api import bodies, forms, pages, timeline
from flowledger.api.auth import COOKIE, OPERATE, READ, require
from flowledger.api.reads_routes import complete, task_check
from flowledger.api.runs_routes import visible_run
from flowledger.api.tokens import Principal
from flowledger.errors import FlowledgerError
from flowledger.settings import Settings
from projections import db, lookups, queries
from workflows.codes import HUMAN_TASK_RESPONSE_INVALID

UI = "/ui/"


def wants_page(request: Request) -> bool:
    return request.url.path.startswith(UI)


def error_page(exc: FlowledgerError) -> Response:
    if exc.status == 401:
        return RedirectResponse("/ui/login", status_code=303)
    body = f'<p class="error" data-code="{escape(exc.code)}">{escape(exc.message)}</p>'
    return HTMLResponse(pages.layout(f"{exc.status} {exc.code}", body), status_code=exc.status)


def _login_form(message: str = "") -> str:
    error = f'<p class="error">{escape(message)}</p>' if message else ""
    return pages.layout(
        "Sign in",
        f'{error}<form method="post" action="/ui/login"><div class="field">'
        '<label for="token">API token</label>'
        '<input type="password" id="token" name="token" autocomplete="off"></div>'
        '<button type="submit" id="sign-in">Sign in</button></form>',
    )


def _task_page(
    task: dict[str, Any],
    values: dict[str, Any] | None = None,
    errors: dict[str, list[str]] | None = None,
) -> str:
    form = forms.fields(task.get("form_schema"))
    task_id = str(task["task_id"])
    run_link = f'<a href="/ui/runs/{quote(str(task["run_id"]))}">{escape(str(task["run_id"]))}</a>'
    head = (
        f'<p class="description">{escape(str(task.get("description") or ""))}</p>'
        f'<p>status <span class="status" id="task-status">{escape(str(task["status"]))}</span>'
        f" · type {escape(str(task.get('task_type') or ''))} · run {run_link}</p>"
        f"<h2>Context</h2>{pages.json_block(task.get('context') or {})}"
    )
    if str(task["status"]).upper() != "OPEN":
        answer = pages.json_block(task.get("response"))
        done = f"<h2>Answered by {escape(str(task.get('completed_by')))}</h2>{answer}"
        return pages.layout(str(task.get("title") or task_id), head + done)
    body = (
        f'{head}<h2>Answer</h2><form method="post" id="task-form" '
        f'action="/ui/tasks/{quote(task_id)}" novalidate>'
        f'{forms.render(form, values, errors)}<button type="submit" id="submit">Complete</button>'
        "</form>"
    )
    return pages.layout(str(task.get("title") or task_id), body)


def router(settings: Settings) -> APIRouter:
    routes = APIRouter(prefix="/ui", include_in_schema=False)

    @routes.get("/login")
    def login_form() -> HTMLResponse:
        return HTMLResponse(_login_form())

    @routes.post("/login")
    async def login(request: Request) -> Response:
        posted = dict(parse_qsl((await bodies.read(request, settings)).decode("utf-8", "replace")))
        token = posted.get("token", "").strip()
        if not token or request.app.state.tokens.find(token) is None:
            return HTMLResponse(_login_form("that token is not known"), status_code=401)
        answer = RedirectResponse("/ui/tasks", status_code=303)
        answer.set_cookie(COOKIE, token, httponly=True, samesite="strict", path=UI)
        return answer

    @routes.get("/tasks")
    def tasks(principal: Principal = Depends(require(READ))) -> HTMLResponse:
        with db.reading(settings.database_url()) as conn:
            found = queries.list_tasks(conn, status="OPEN", tenant=tuple(sorted(principal.tenants)))
        rows = [
            [
                f'<a class="task-link" href="/ui/tasks/{quote(str(t["task_id"]))}">'
                f"{escape(str(t.get('title') or t['task_id']))}</a>",
                escape(str(t.get("task_type") or "")),
                escape(str(t.get("tenant"))),
                f'<a href="/ui/runs/{quote(str(t["run_id"]))}">{escape(str(t["run_id"]))}</a>',
                escape(str(t.get("created_at") or "")),
            ]
            for t in found
        ]
        body = (
            pages.table(["task", "type", "tenant", "run", "created"], rows, "tasks")
            if rows
            else '<p id="empty">No open tasks.</p>'
        )
        return HTMLResponse(pages.layout(f"Open tasks ({len(found)})", body))

    def _task(principal: Principal, task_id: str) -> dict[str, Any]:
        task = lookups.find_task(settings.database_url(), task_id)
        task_check(principal)(task)
        return task

    @routes.get("/tasks/{task_id}")
    def task(task_id: str, principal: Principal = Depends(require(READ))) -> HTMLResponse:
        return HTMLResponse(_task_page(_task(principal, task_id)))

    @routes.post("/tasks/{task_id}")
    async def answer(
        task_id: str, request: Request, principal: Principal = Depends(require(OPERATE))
    ) -> Response:
        posted = dict(parse_qsl((await bodies.read(request, settings)).decode("utf-8", "replace")))
        found = await run_in_threadpool(_task, principal, task_id)
        form = forms.fields(found.get("form_schema"))
        response = forms.response(form, posted)
        try:
            done = await run_in_threadpool(complete, settings, principal, task_id, response)
        except FlowledgerError as exc:
            if exc.code != HUMAN_TASK_RESPONSE_INVALID:
                raise
            errors = forms.errors_by_field(list(exc.context.get("errors") or []))
            page = _task_page(found, {**posted, **response}, errors)
            return HTMLResponse(page, status_code=400)
        return RedirectResponse(f"/ui/runs/{quote(str(done['run_id']))}", status_code=303)

    @routes.get("/runs/{run_id}")
    def run(run_id: str, principal: Principal = Depends(require(READ))) -> HTMLResponse:
        visible_run(settings, principal, run_id)
        with db.reading(settings.database_url()) as conn:
            document = queries.show_run(conn, run_id)
        info = document["run"]
        status = str(info["status"])
        summary = (
            f'<p>status <span class="status" id="run-status">{escape(status)}</span> · '
            f"definition {escape(str(info['definition_id']))} v{escape(str(info['version']))}"
            f" · tenant {escape(str(info['tenant']))}</p>"
        )
        svg = timeline.svg(document, datetime.now(UTC))
        steps = pages.table(
            ["step", "type", "status", "started", "completed"],
            [
                [escape(str(s[c])) for c in ("step_path", "step_type", "status")]
                + [escape(str(s["started_at"])), escape(str(s["completed_at"] or ""))]
                for s in document["steps"]
            ],
            "steps",
        )
        # A run still going is shown as it moves on.
        refresh = None if status in queries.TERMINAL else 2
        body = f"{summary}<h2>Timeline</h2>{svg}<h2>Steps</h2>{steps}"
        return HTMLResponse(pages.layout(f"Run {run_id}", body, refresh_s=refresh))

    return routes
