"""Experiments: plan the runs, validate every one like POST /api/runs (all or nothing), queue them."""
import logging

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.datasets.models import Dataset
from app.experiments import plans, search, search_space
from app.experiments.models import Experiment
from app.experiments.schemas import ExperimentCreate, MethodsExperiment, SearchExperiment
from app.runs import lifecycle, queue_order
from app.runs import service as runs_service
from app.runs.models import Run
from app.runs.schemas import RunCreate

FieldErrors = runs_service.FieldErrors
log = logging.getLogger("peftlab.experiments")
MAX_ERRORS = 50  # a 64-run grid with one bad shared field would otherwise repeat it 64 times and more


def plan(session: Session, body: ExperimentCreate, visible: set[int] | None) -> list[tuple[RunCreate, Dataset]]:
    """Every run the request makes, validated. Raises FieldErrors naming the run and field of each problem."""
    spec = body.model_dump(mode="json")
    try:
        planned = plans.methods_plan(spec) if isinstance(body, MethodsExperiment) else plans.grid_plan(spec)
    except plans.PlanError as e:
        raise FieldErrors([{"loc": ["body", *e.loc], "msg": e.msg, "type": "value_error"}]) from None
    problems, runs = [], []  # problems: (run index, label, field loc, type, message)
    for i, (label, raw) in enumerate(planned):
        try:
            config = RunCreate.model_validate(raw)
            dataset, _ = runs_service.validate_references(session, config, visible)
        except ValidationError as e:
            problems += [(i, label, tuple(err["loc"]), err["type"],
                          f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}")
                         for err in e.errors(include_url=False, include_context=False, include_input=False)]
            continue
        except FieldErrors as e:
            problems += [(i, label, tuple(err["loc"][1:]), err["type"], err["msg"]) for err in e.errors]
            continue
        runs.append((config, dataset))
    if problems:
        raise FieldErrors(_said_once(problems, len(planned), spec.get("grid") or {})[:MAX_ERRORS])
    if len({dataset.project_id for _, dataset in runs}) > 1:
        raise FieldErrors([{"loc": ["body"], "type": "value_error",
                            "msg": "The runs of one experiment must use datasets of one project."}])
    return runs


def _said_once(problems: list[tuple], n_runs: int, grid: dict) -> list[dict]:
    """One error per problem: a problem every run has (an unknown key, a bad base setting) is said once, for
    the grid key or base field it comes from; one that only some combinations have names each such run."""
    runs_having: dict[tuple, set[int]] = {}
    for i, _, loc, kind, msg in problems:
        runs_having.setdefault((loc, kind, msg), set()).add(i)
    errors, said = [], set()
    for i, label, loc, kind, msg in problems:
        key = (loc, kind, msg)
        if n_runs > 1 and len(runs_having[key]) == n_runs:
            if key not in said:
                said.add(key)
                errors.append({"loc": _source_of(loc, grid), "type": kind, "msg": f"every run: {msg}"})
            continue
        errors.append({"loc": ["body", "runs", i, *loc], "type": kind, "msg": f"run {i + 1} ({label}): {msg}"})
    return errors


def _source_of(loc: tuple, grid: dict) -> list:
    """["body", "grid", key] when a grid key sets the field at loc, else the field itself."""
    # Pydantic puts the method's type in the path (method.lora.r); grid keys do not (method.r).
    plain = [loc[0], *loc[2:]] if loc[:1] == ("method",) and len(loc) > 2 else list(loc)
    for key in grid:
        parts = key.split(".")
        if [str(p) for p in plain[:len(parts)]] == parts or [str(p) for p in loc[:len(parts)]] == parts:
            return ["body", "grid", key]
    return ["body", *loc]


def create(session: Session, *, body: ExperimentCreate, owner_id: int | None, visible: set[int] | None) -> Experiment:
    """The experiment and all its runs in one transaction, then each run is sent to the workers."""
    if isinstance(body, SearchExperiment):
        return _create_search(session, body=body, owner_id=owner_id, visible=visible)
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


def _create_search(session: Session, *, body: SearchExperiment, owner_id: int | None,
                   visible: set[int] | None) -> Experiment:
    """The experiment and its study; its first trials are asked for at once, the rest as trials end."""
    _, dataset = search_space.check(session, body, visible)
    experiment = Experiment(name=body.name.strip()[:200], kind=body.kind, spec=body.model_dump(mode="json"),
                            project_id=dataset.project_id, owner_id=owner_id)
    session.add(experiment)
    session.flush()
    search.start(session, experiment)
    session.commit()
    try:
        search.drive(session, experiment.id)  # the first trials now, so the answer lists them
    except Exception:  # noqa: BLE001 — the server's search loop asks again in a moment
        session.rollback()
        log.exception("search of experiment %s: the first round failed", experiment.id)
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
    if experiment.kind == "search":
        search.stop(session, experiment.id)  # no new trials from here on
    for run_id in _run_ids(session, experiment.id, "queued"):
        lifecycle.request_cancel(session, run_id)  # atomic: no worker starts it after this
    if running := _run_ids(session, experiment.id, "running"):  # one started just before its cancel
        return running
    for run in runs_of(session, experiment_id=experiment.id):
        runs_service.delete(session, settings=settings, run=run)
    experiment_id, kind = experiment.id, experiment.kind
    session.delete(experiment)
    session.commit()
    if kind == "search":
        search.forget(experiment_id)
    return []
