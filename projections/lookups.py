"""What run control needs to find in the projections before it asks Temporal: a task
as projected, and the Temporal workflow id of a run. The tables are the index here,
never the authority: Temporal still decides whether the request is taken."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from flowledger.errors import NotFound, ServiceUnavailable
from projections import db
from projections.tables import workflow_human_tasks, workflow_runs
from workflows.codes import HUMAN_TASK_NOT_FOUND
from workflows.messages import run_workflow_id


def find_task(database_url: str, task_id: str) -> dict[str, Any]:
    query = select(workflow_human_tasks).where(workflow_human_tasks.c.task_id == task_id)
    with db.reading(database_url) as conn:
        row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(f"no human task {task_id}", code=HUMAN_TASK_NOT_FOUND, task_id=task_id)
    return dict(row)


def tenant_of(database_url: str, run_id: str) -> str | None:
    """The run's tenant as projected, for the operator audit; None when unknown."""
    query = select(workflow_runs.c.tenant).where(workflow_runs.c.run_id == run_id)
    try:
        with db.reading(database_url) as conn:
            found = conn.execute(query).scalar()
    except ServiceUnavailable:
        found = None
    return str(found) if found else None


def workflow_id_of(database_url: str, run_id: str) -> str:
    """Runs started by an event have a trigger workflow id, which the run projection
    knows; with no projection yet, a run started by `runs start` has the plain id."""
    query = select(workflow_runs.c.workflow_id).where(workflow_runs.c.run_id == run_id)
    try:
        with db.reading(database_url) as conn:
            found = conn.execute(query).scalar()
    except ServiceUnavailable:
        found = None
    return str(found) if found else run_workflow_id(run_id)
