"""Experiments: plan the runs, validate every one like POST /api/runs (all or nothing), queue them."""
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.datasets.models import Dataset
from app.experiments import plans
from app.experiments.models import Experiment
from app.experiments.schemas import ExperimentCreate, MethodsExperiment
from app.runs import lifecycle, queue_order
from app.runs import service as runs_service
from app.runs.models import Run
from app.runs.schemas import RunCreate

FieldErrors = runs_service.FieldErrors
MAX_ERRORS = 50  # a 64-run grid with one bad shared field would otherwise repeat it 64 times and more


def plan(session: Session, body: ExperimentCreate, visible: set[int] | None) -> list[tuple[RunCreate, Dataset]]:
    """Every run the request makes, validated. Raises FieldErrors naming the run and field of each problem."""
    spec = body.model_dump(mode="json")
    try:
        planned = plans.methods_plan(spec) if isinstance(body, MethodsExperiment) else plans.grid_plan(spec)
    except plans.PlanError as e:
        raise FieldErrors([{"loc": ["body", *e.loc], "msg": e.msg, "type": "value_error"}]) from None
    errors, runs = [], []
    for i, (label, raw) in enumerate(planned):
        where = ["body", "runs", i]
        try:
            config = RunCreate.model_validate(raw)
            dataset, _ = runs_service.validate_references(session, config, visible)
        except ValidationError as e:
            errors += [{"loc": [*where, *err["loc"]], "type": err["type"],
                        "msg": f"run {i + 1} ({label}): {'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}"}
                       for err in e.errors(include_url=False, include_context=False, include_input=False)]
            continue
        except FieldErrors as e:
            errors += [{**err, "loc": [*where, *err["loc"][1:]], "msg": f"run {i + 1} ({label}): {err['msg']}"}
                       for err in e.errors]
            continue
        runs.append((config, dataset))
    if errors:
        raise FieldErrors(errors[:MAX_ERRORS])
    if len({dataset.project_id for _, dataset in runs}) > 1:
        raise FieldErrors([{"loc": ["body"], "type": "value_error",
                            "msg": "The runs of one experiment must use datasets of one project."}])
    return runs


def create(session: Session, *, body: ExperimentCreate, owner_id: int | None, visible: set[int] | None) -> Experiment:
    """The experiment and all its runs in one transaction, then each run is sent to the workers."""
    runs = plan(session, body, visible)
    experiment = Experiment(name=body.name.strip()[:200], kind=body.kind, spec=body.model_dump(mode="json"),
                            project_id=runs[0][1].project_id, owner_id=owner_id)
    session.add(experiment)
    session.flush()
    rows = [runs_service.new_run(config, dataset, owner_id=owner_id, experiment_id=experiment.id)
            for config, dataset in runs]
    session.add_all(rows)
    session.commit()
    for row in rows:
        runs_service.enqueue(session, row.id)
    return experiment


def get(session: Session, *, experiment_id: int) -> Experiment | None:
    return session.get(Experiment, experiment_id)


def get_all(session: Session, *, visible: set[int] | None = None, limit: int = 500) -> list[Experiment]:
    query = select(Experiment).order_by(Experiment.id.desc()).limit(limit)
    if visible is not None:
        query = query.where(Experiment.project_id.in_(visible))
    return list(session.scalars(query))


def status_counts(session: Session, *, experiment_ids: list[int]) -> dict[int, dict[str, int]]:
    """experiment id → {status: number of its runs}."""
    counts: dict[int, dict[str, int]] = {i: {} for i in experiment_ids}
    if experiment_ids:
        rows = session.execute(select(Run.experiment_id, Run.status, func.count())
                               .where(Run.experiment_id.in_(experiment_ids))
                               .group_by(Run.experiment_id, Run.status))
        for experiment_id, status, n in rows:
            counts[experiment_id][status] = n
    return counts


def runs_of(session: Session, *, experiment_id: int) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.experiment_id == experiment_id).order_by(Run.id)))


def queue_positions(session: Session) -> dict[int, int]:
    return queue_order.positions(session)


def _run_ids(session: Session, experiment_id: int, status: str) -> list[int]:
    # Column queries read the database afresh (ORM objects loaded earlier may hold an old status).
    return list(session.scalars(select(Run.id).where(Run.experiment_id == experiment_id, Run.status == status)))


def delete(session: Session, *, settings: Settings, experiment: Experiment) -> list[int]:
    """Delete the experiment with its runs (and their metrics and artifacts). Returns the ids of its
    running runs instead when there are any (then nothing is deleted; the caller answers 409)."""
    if running := _run_ids(session, experiment.id, "running"):
        return running
    for run_id in _run_ids(session, experiment.id, "queued"):
        lifecycle.request_cancel(session, run_id)  # atomic: no worker starts it after this
    if running := _run_ids(session, experiment.id, "running"):  # one started just before its cancel
        return running
    for run in runs_of(session, experiment_id=experiment.id):
        runs_service.delete(session, settings=settings, run=run)
    session.delete(experiment)
    session.commit()
    return []
