from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from app.auth.deps import Viewer, Visible, can_see
from app.config import Settings, get_settings
from app.db import get_db
from app.runs import lifecycle, service
from app.methods import all_specs
from app.runs.models import Run
from app.runs.method_form import form_fields
from app.runs.schemas import MAX_TAG_CHARS, MethodOut, RunCreate, RunOut, RunUpdate
from app.runs.sorting import SORT_KEYS, sort_runs
from app.templating import render

router = APIRouter(prefix="/api/runs", tags=["runs"])
pages = APIRouter(include_in_schema=False)
methods_router = APIRouter(prefix="/api/methods", tags=["runs"])
DB = Annotated[Session, Depends(get_db)]


def run_or_404(run_id: int, session: DB, visible: Visible) -> Run:
    """The run, if the viewer may see it; someone else's answers exactly like a missing one."""
    run = service.get(session, run_id=run_id)
    if run is None or not can_see(visible, run.project_id):
        raise HTTPException(404, f"Run {run_id} not found.")
    return run


RunDep = Annotated[Run, Depends(run_or_404)]


@router.post("", status_code=201, response_model=RunOut)
def create_run(body: RunCreate, session: DB, user: Viewer, visible: Visible):
    """Queue a fine-tuning run; a worker picks it up as soon as one is free."""
    try:
        return service.create(session, body=body, owner_id=user.id, visible=visible)
    except service.FieldErrors as e:
        raise HTTPException(422, e.errors) from None


@router.get("", response_model=list[RunOut])
def list_runs(session: DB, visible: Visible,
              status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
              method: str | None = Query(None, max_length=32), dataset_id: int | None = None,
              base_model: str | None = Query(None, max_length=64), tag: str | None = Query(None, max_length=MAX_TAG_CHARS),
              sort: Literal[SORT_KEYS] = Query("id", description="best = accuracy (else F1, else lowest perplexity)."),
              order: Literal["asc", "desc"] = "desc"):
    """The newest 500 runs matching the filters, in the order asked for."""
    runs = service.get_all(session, status=status, method=method, dataset_id=dataset_id, base_model=base_model,
                           tag=tag, visible=visible)
    return sort_runs(runs, sort, descending=order == "desc")


@router.get("/{run_id}", response_model=RunOut)
def get_run(run: RunDep):
    return run


@router.patch("/{run_id}", response_model=RunOut)
def update_run(run: RunDep, body: RunUpdate, session: DB):
    """Rename a run, replace its tags or its notes."""
    return service.update(session, run=run, body=body)


@router.post("/{run_id}/cancel", response_model=RunOut)
def cancel_run(run: RunDep, session: DB):
    """Cancel a queued run at once, or ask a running one's worker to stop (it does within a few steps)."""
    if lifecycle.request_cancel(session, run.id) is None:
        raise HTTPException(409, f"Run {run.id} has already ended ({run.status}).")
    session.refresh(run)
    return run


@router.delete("/{run_id}", status_code=204)
def delete_run(run: RunDep, session: DB, settings: Annotated[Settings, Depends(get_settings)]):
    if run.status == "running":
        raise HTTPException(409, f"Run {run.id} is running; cancel it first.")
    service.delete(session, settings=settings, run=run)


@pages.get("/")
def home():
    return RedirectResponse("/runs", status_code=303)


@pages.get("/runs")
def runs_page(request: Request):
    return render(request, "runs/list.html", "Runs")


@pages.get("/runs/new")
def new_run_page(request: Request, dataset_id: int | None = None):
    return render(request, "runs/new.html", "New run", dataset_id=dataset_id,
                  method_fields={spec.name: form_fields(spec) for spec in all_specs()})


@pages.get("/runs/{run_id}")
def run_page(request: Request, run: RunDep):
    return render(request, "runs/detail.html", run.name, run_id=run.id)


@methods_router.get("", response_model=list[MethodOut])
def list_methods():
    """Every fine-tuning method the server accepts (the registry, app/methods): its settings as a JSON
    schema (defaults, bounds, help, choices), the preset learning rate a run without one gets, and
    what it supports."""
    return [MethodOut(name=s.name, title=s.title, description=s.description, paper=s.paper,
                      learning_rate=s.learning_rate, tasks=list(s.tasks),
                      architectures=list(s.architectures) if s.architectures else None,
                      quantized_base=s.quantized_base, presets=s.presets, defaults=s.defaults(),
                      settings_schema=s.schema()) for s in all_specs()]
