from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.auth.deps import Viewer, Visible, can_see
from app.config import Settings, get_settings
from app.db import get_db
from app.ids import Id
from app.methods import all_specs
from app.metrics import service as metrics_service
from app.runs import config_file, lifecycle, queue_order, service
from app.runs.method_form import form_fields
from app.runs.models import Run
from app.runs.schemas import MAX_TAG_CHARS, MethodOut, RunCreate, RunListItem, RunOut, RunUpdate
from app.runs.sorting import SORT_KEYS, sort_runs
from app.templating import render
from app.worker_status import service as worker_status

router = APIRouter(prefix="/api/runs", tags=["runs"])
pages = APIRouter(include_in_schema=False)
methods_router = APIRouter(prefix="/api/methods", tags=["runs"])
DB = Annotated[Session, Depends(get_db)]


def run_or_404(run_id: Id, session: DB, visible: Visible) -> Run:
    """The run, if the viewer may see it; someone else's answers exactly like a missing one."""
    run = service.get(session, run_id=run_id)
    if run is None or not can_see(visible, run.project_id):
        raise HTTPException(404, f"Run {run_id} not found.")
    return run


RunDep = Annotated[Run, Depends(run_or_404)]
MAX_SEARCH_CHARS = 100
MAX_METRIC_NAMES = 8


@router.post("", status_code=201, response_model=RunOut)
def create_run(body: RunCreate, session: DB, user: Viewer, visible: Visible):
    """Queue a fine-tuning run; a worker picks it up as soon as one is free."""
    try:
        return service.create(session, body=body, owner_id=user.id, visible=visible)
    except service.FieldErrors as e:
        raise HTTPException(422, e.errors) from None


async def _yaml_body(request: Request) -> dict:
    try:
        return config_file.from_yaml(await request.body())
    except config_file.ConfigFileError as e:
        raise HTTPException(422, str(e)) from None


@router.post("/yaml", status_code=201, response_model=RunOut, openapi_extra={"requestBody": {
    "required": True, "content": {"application/yaml": {"schema": {"type": "string"}}}}})
def create_run_from_yaml(config: Annotated[dict, Depends(_yaml_body)], session: DB, user: Viewer, visible: Visible):
    """Queue a run from a YAML file holding the body of POST /api/runs (what GET /api/runs/{id}/config.yaml
    exports)."""
    try:
        body = RunCreate.model_validate(config)
    except ValidationError as e:
        raise HTTPException(422, [{"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]}
                                  for err in e.errors(include_url=False, include_context=False,
                                                      include_input=False)]) from None
    return create_run(body, session, user, visible)


@router.get("", response_model=list[RunListItem])
def list_runs(session: DB, visible: Visible,
              status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
              method: str | None = Query(None, max_length=32), dataset_id: Id | None = None,
              base_model: str | None = Query(None, max_length=64), tag: str | None = Query(None, max_length=MAX_TAG_CHARS),
              sort: Literal[SORT_KEYS] = Query("id", description="best = accuracy (else F1, else lowest perplexity)."),
              order: Literal["asc", "desc"] = "desc",
              q: str | None = Query(None, max_length=MAX_SEARCH_CHARS, description="Runs whose name contains this, in any case."),
              metrics: str | None = Query(None, max_length=MAX_METRIC_NAMES * 65,
                                          description=f"Up to {MAX_METRIC_NAMES} metric names, comma-separated "
                                          "(e.g. eval/accuracy,train/loss): each run gets their {min, max, last}.")):
    """The newest 500 runs matching the filters, in the order asked for, with queued runs' places in the queue."""
    names = list(dict.fromkeys(n.strip() for n in (metrics or "").split(",") if n.strip()))
    if len(names) > MAX_METRIC_NAMES:
        raise HTTPException(422, f"Ask for at most {MAX_METRIC_NAMES} metrics at once (got {len(names)}).")
    runs = service.get_all(session, status=status, method=method, dataset_id=dataset_id, base_model=base_model,
                           tag=tag, visible=visible, q=(q or "").strip() or None)
    runs = sort_runs(runs, sort, descending=order == "desc")
    places = queue_order.positions(session) if any(r.status == "queued" for r in runs) else {}
    figures = metrics_service.summaries(session, [r.id for r in runs], names)
    return [RunListItem.model_validate(r).model_copy(update={"queue_position": places.get(r.id),
                                                             "metrics": figures.get(r.id, {})}) for r in runs]


@router.get("/{run_id}", response_model=RunOut)
def get_run(run: RunDep):
    return run


@router.get("/{run_id}/config.yaml", response_class=Response,
            responses={200: {"content": {"application/yaml": {}}, "description": "The run's config as YAML."}})
def run_config_yaml(run: RunDep):
    """The run's config as a YAML file: the body POST /api/runs (or POST /api/runs/yaml) takes."""
    return Response(config_file.to_yaml(run.id, run.config), media_type="application/yaml",
                    headers={"Content-Disposition": f'attachment; filename="peftlab-run-{run.id}.yaml"'})


@router.patch("/{run_id}", response_model=RunOut)
def update_run(run: RunDep, body: RunUpdate, session: DB):
    """Rename a run, replace its tags or its notes."""
    return service.update(session, run=run, body=body)


@router.post("/{run_id}/cancel", response_model=RunOut)
def cancel_run(run: RunDep, session: DB):
    """Cancel a queued run at once, or ask a running one's worker to stop (it does within a few steps)."""
    ended = lifecycle.request_cancel(session, run.id) is None
    session.refresh(run)  # the status now, not the one read before the request (a worker may just have finished)
    if ended:
        raise HTTPException(409, f"Too late: run {run.id} already finished ({run.status}).")
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
def new_run_page(request: Request, dataset_id: Id | None = None):
    return render(request, "runs/new.html", "New run", dataset_id=dataset_id,
                  method_fields={spec.name: form_fields(spec) for spec in all_specs()})


@pages.get("/runs/{run_id}")
def run_page(request: Request, run: RunDep, session: DB, settings: Annotated[Settings, Depends(get_settings)]):
    # A queued run whose workers refuse the server's messages (another PEFTLAB_SECRET_KEY) would wait forever
    # without a word: the page says why (runs_detail.js keeps it current while the run waits).
    refusals = (worker_status.key_refusals(session, requeue_after_seconds=settings.requeue_after_seconds)
                if run.status == "queued" else [])
    return render(request, "runs/detail.html", run.name, run_id=run.id, refusals=refusals)


@methods_router.get("", response_model=list[MethodOut])
def list_methods():
    """Every fine-tuning method the server accepts (the registry, app/methods): its settings as a JSON
    schema (defaults, bounds, help, choices), the preset learning rate a run without one gets, and
    what it supports."""
    return [MethodOut(name=s.name, title=s.title, description=s.description, paper=s.paper,
                      learning_rate=s.learning_rate, tasks=list(s.tasks),
                      architectures=list(s.architectures) if s.architectures else None,
                      quantized_base=s.quantized_base, shards=s.shards, presets=s.presets, defaults=s.defaults(),
                      settings_schema=s.schema()) for s in all_specs()]
