from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.auth.deps import Viewer, Visible, can_see
from app.config import Settings, get_settings
from app.db import get_db
from app.ids import Id
from app.experiments import search, service
from app.experiments.models import Experiment
from app.experiments.schemas import ExperimentCreate, ExperimentDetail, ExperimentOut, MoveOut, MoveRequest
from app.runs import queue_order
from app.runs.schemas import RunOut
from app.runs.views import RunDep
from app.templating import render

router = APIRouter(prefix="/api/experiments", tags=["experiments"])
queue_router = APIRouter(prefix="/api/runs", tags=["runs"])
pages = APIRouter(include_in_schema=False)
DB = Annotated[Session, Depends(get_db)]


def experiment_or_404(experiment_id: Id, session: DB, visible: Visible) -> Experiment:
    """The experiment, if the viewer may see it; someone else's answers exactly like a missing one."""
    experiment = service.get(session, experiment_id=experiment_id)
    if experiment is None or not can_see(visible, experiment.project_id):
        raise HTTPException(404, f"Experiment {experiment_id} not found.")
    return experiment


ExperimentDep = Annotated[Experiment, Depends(experiment_or_404)]


def _summary(experiment: Experiment, counts: dict[str, int]) -> dict:
    out = ExperimentOut.model_validate(experiment).model_dump()
    return {**out, "run_count": sum(counts.values()), "statuses": counts}


def _detail(session: Session, experiment: Experiment) -> dict:
    runs = service.runs_of(session, experiment_id=experiment.id)
    positions = service.queue_positions(session)
    counts = service.status_counts(session, experiment_ids=[experiment.id])[experiment.id]
    return {**_summary(experiment, counts),
            "runs": [{**RunOut.model_validate(r).model_dump(), "queue_position": positions.get(r.id)} for r in runs],
            "search": search.summary(session, experiment) if experiment.kind == "search" else None}


@router.post("", status_code=201, response_model=ExperimentDetail)
def create_experiment(body: Annotated[ExperimentCreate, Body(discriminator="kind")], session: DB, user: Viewer,
                      visible: Visible):
    """Launch a group of runs: `kind: "methods"` runs each chosen method on one dataset with its own
    defaults; `kind: "grid"` runs a base config once per combination of the grid's values. Every run
    is validated like POST /api/runs, and either all are queued or none (422 naming run and field).
    `kind: "search"` lets Optuna choose each trial's values from a search space (validated at both ends of
    every range), queues `parallelism` trials at once and prunes trials that fall behind."""
    try:
        experiment = service.create(session, body=body, owner_id=user.id, visible=visible)
    except service.FieldErrors as e:
        raise HTTPException(422, e.errors) from None
    return _detail(session, experiment)


@router.get("", response_model=list[ExperimentOut])
def list_experiments(session: DB, visible: Visible):
    experiments = service.get_all(session, visible=visible)
    counts = service.status_counts(session, experiment_ids=[e.id for e in experiments])
    return [_summary(e, counts[e.id]) for e in experiments]


@router.get("/{experiment_id}", response_model=ExperimentDetail)
def get_experiment(experiment: ExperimentDep, session: DB):
    """The experiment with its runs; queued runs carry their place in the (shared) queue."""
    return _detail(session, experiment)


@router.delete("/{experiment_id}", status_code=204)
def delete_experiment(experiment: ExperimentDep, session: DB, settings: Annotated[Settings, Depends(get_settings)]):
    """Delete the experiment and its runs (queued ones are cancelled), with their metrics and artifacts.
    Refused (409) while one of its runs is running: cancel it first."""
    running = service.delete(session, settings=settings, experiment=experiment)
    if running:
        listed = ", ".join(f"#{i}" for i in running)
        raise HTTPException(409, f"Experiment {experiment.id} has running runs ({listed}); cancel them first.")


@queue_router.post("/{run_id}/move", response_model=MoveOut, responses={409: {"description": "the run is not queued"}})
def move_run(body: MoveRequest, run: RunDep, session: DB, visible: Visible):
    """Change when a queued run starts: to the `top` (of your queued runs; admins: of the whole queue),
    the `bottom`, or one place `up` or `down`. The queue is shared by every project, and a move only
    trades places among your own projects' runs; position 1 starts next."""
    position = queue_order.move(session, run.id, body.position, visible)
    if position is None:
        session.refresh(run)
        raise HTTPException(409, f"Run {run.id} is not queued (status: {run.status}); only queued runs can be moved.")
    return MoveOut(id=run.id, queue_position=position, queue_length=len(queue_order.queued_ids(session)))


@pages.get("/experiments")
def experiments_page(request: Request):
    return render(request, "experiments/list.html", "Experiments")


@pages.get("/experiments/{experiment_id}")
def experiment_page(request: Request, experiment: ExperimentDep):
    return render(request, "experiments/detail.html", experiment.name, experiment_id=experiment.id, kind=experiment.kind)
