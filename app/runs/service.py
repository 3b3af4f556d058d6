"""Runs: create (validated against datasets and models), list, get, cancel, delete."""
import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.datasets.distribution import distribution
from app.datasets.models import Dataset
from app.datasets.scan import safe_preview
from app.datasets.reader import DatasetError
from app.metrics import notify
from app.models import service as models_service
from app.queue import send_train
from app.runs import lifecycle
from app.runs.checks import memory_problem, run_problems
from app.runs.label_names import LabelNamesError, name_map
from app.runs.models import Run, RunTag
from app.runs.schemas import RunCreate, RunUpdate
from app.worker_status import service as worker_status

log = logging.getLogger(__name__)


class FieldErrors(ValueError):
    """Problems with specific fields of a run config, in FastAPI's 422 detail shape."""

    def __init__(self, errors: list[dict]):
        super().__init__("; ".join(e["msg"] for e in errors))
        self.errors = errors


def _err(loc: tuple, msg: str) -> dict:
    return {"loc": ["body", *loc], "msg": msg, "type": "value_error"}


def _visible_dataset(session: Session, dataset_id: int, visible: set[int] | None) -> Dataset | None:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or (visible is not None and dataset.project_id not in visible):
        return None  # someone else's dataset reads exactly like a missing one
    return dataset


def validate_references(session: Session, body: RunCreate, visible: set[int] | None = None) -> tuple[Dataset, Dataset | None]:
    """Check what pydantic cannot: the datasets (visible to the viewer), columns and base model exist."""
    errors: list[dict] = []
    dataset = _visible_dataset(session, body.dataset_id, visible)
    if dataset is None:
        errors.append(_err(("dataset_id",), f"Dataset {body.dataset_id} does not exist."))
    eval_dataset = None
    if body.eval_dataset_id is not None:
        eval_dataset = _visible_dataset(session, body.eval_dataset_id, visible)
        if eval_dataset is None:
            errors.append(_err(("eval_dataset_id",), f"Dataset {body.eval_dataset_id} does not exist."))
        elif dataset is not None and eval_dataset.project_id != dataset.project_id:
            # The run lives in the dataset's project: its members must not see another project's data.
            errors.append(_err(("eval_dataset_id",), "The eval dataset must be in the same project as the dataset."))
    models_service.ensure_bundled(session)
    model = models_service.get(session, model_id=body.base_model)
    if model is None:
        errors.append(_err(("base_model",), f"Base model {body.base_model!r} is not registered; see /api/models."))
    fusion_variant = None
    if body.method.type == "adapter_fusion":
        fusion, fusion_variant = _fusion_errors(session, body, visible, dataset.project_id if dataset is not None else None)
        errors += fusion
    # What the worker would find out only after the run waited in the queue (app/runs/checks.py).
    problems = run_problems(body, num_rows=dataset.num_rows if dataset is not None else None,
                            columns=[c["name"] for c in dataset.columns] if dataset is not None else None,
                            eval_columns=[c["name"] for c in eval_dataset.columns] if eval_dataset is not None else None,
                            facts=models_service.shape_facts(session, model) if model is not None else None,
                            max_trainable=get_settings().max_trainable_params, fusion_variant=fusion_variant,
                            rows=_chat_preview(body, dataset), eval_rows=_chat_preview(body, eval_dataset))
    errors += [_err(p.loc, p.msg) for p in problems]
    if body.training.quantization and (why := worker_status.quantization_problem(session, body.training.quantization)):
        errors.append(_err(("training", "quantization"), why))
    if why := worker_status.gpus_problem(session, body.training.gpus):
        errors.append(_err(("training", "gpus"), why))
    if model is not None and not errors:
        errors += _memory_errors(session, body, models_service.shape_facts(session, model), fusion_variant)
    if dataset is not None and body.columns.label_names is not None and not errors:
        errors += _label_name_errors(body, dataset)
    if errors:
        raise FieldErrors(errors)
    return dataset, eval_dataset


def _memory_errors(session: Session, body: RunCreate, facts: dict, fusion_variant: str | None) -> list[dict]:
    """A run no worker seen in the last hour could fit is refused now rather than waiting forever;
    with no worker seen at all nothing is refused (workers may be started later)."""
    workers = worker_status.recent(session)
    problem = memory_problem(body, facts, workers, fusion_variant=fusion_variant)
    return [_err(problem.loc, problem.msg)] if problem else []


def _chat_preview(body: RunCreate, dataset) -> list[dict] | None:
    """The stored preview rows, for the check of the chat column's cells (only loaded for chat runs)."""
    if dataset is None or not body.columns.messages:
        return None
    return safe_preview(dataset.preview)
def _label_name_errors(body: RunCreate, dataset: Dataset) -> list[dict]:
    """columns.label_names must name every distinct value of the label column: one streaming, time-bounded
    count of the file (app/datasets/distribution.py). A count that could not finish leaves it to the worker."""
    try:
        counted = distribution(get_settings(), dataset, body.columns.label)
    except DatasetError:
        return []  # the worker says what is wrong with the file
    if not counted.complete or counted.untracked:
        return []
    try:
        name_map(body.columns.label_names, list(counted.counts))
    except LabelNamesError as e:
        return [_err(("columns", "label_names"), f"{e} (dataset {dataset.id}, column {body.columns.label!r})")]
    return []


FUSION_LOC = ("method", "adapter_fusion", "adapter_run_ids")


def _fusion_errors(session: Session, body: RunCreate, visible: set[int] | None,
                   project_id: int | None) -> tuple[list[dict], str | None]:
    """AdapterFusion fuses trained adapters: each id must be a succeeded Adapter run on the same
    base model and task as the new run, in the same project (the fused weights ship inside the new
    run's download), and all of one variant (they must sit at the same places). Returns (errors, that variant)."""
    errors, variants = [], {}
    for run_id in body.method.adapter_run_ids:
        run = session.get(Run, run_id)
        if run is None or (visible is not None and run.project_id not in visible):
            errors.append(_err(FUSION_LOC, f"Run {run_id} does not exist."))
            continue
        problems = []
        if run.method != "adapter":
            problems.append(f"it is a {run.method} run, not an Adapter run")
        if run.status != "succeeded":
            problems.append(f"it has not succeeded (status: {run.status}), so it has no trained adapter")
        if run.base_model != body.base_model:
            problems.append(f"it was trained on base model {run.base_model!r}, not {body.base_model!r}")
        if run.task != body.task:
            problems.append(f"it was trained for {run.task}, not {body.task}")
        if run.project_id != project_id:
            problems.append("it belongs to another project than the dataset")
        if problems:
            errors.append(_err(FUSION_LOC, f"Run {run_id} ({run.name}) cannot be fused: {'; '.join(problems)}."))
        else:
            variants[run_id] = (run.config.get("method") or {}).get("variant", "houlsby")
    if len(set(variants.values())) > 1:
        listed = ", ".join(f"run {i}: {v}" for i, v in variants.items())
        errors.append(_err(FUSION_LOC, f"The adapters must be of one variant to be fused ({listed})."))
    return errors, (next(iter(variants.values())) if len(set(variants.values())) == 1 and not errors else None)


def create(session: Session, *, body: RunCreate, owner_id: int | None = None, visible: set[int] | None = None) -> Run:
    """A queued run in its dataset's project, so whoever shares the data sees the run too."""
    dataset, _ = validate_references(session, body, visible)
    run = new_run(body, dataset, owner_id=owner_id)
    session.add(run)
    session.commit()
    enqueue(session, run.id)
    return run


def new_run(body: RunCreate, dataset: Dataset, *, owner_id: int | None, experiment_id: int | None = None) -> Run:
    """The queued row for a validated config (not yet added): shared by POST /api/runs and experiments."""
    name = (body.name or "").strip() or f"{body.method.type} on {dataset.name}"
    return Run(name=name[:200], status="queued", config=body.model_dump(mode="json"), summary={},
               dataset_id=body.dataset_id, eval_dataset_id=body.eval_dataset_id, base_model=body.base_model,
               method=body.method.type, task=body.task, project_id=dataset.project_id, owner_id=owner_id,
               experiment_id=experiment_id)


def enqueue(session: Session, run_id: int, countdown: float | None = None) -> bool:
    """Send the run to the broker (due in `countdown` seconds). If the broker is down the run stays
    queued and the reaper retries."""
    try:
        send_train(run_id, countdown=countdown)
    except Exception:  # noqa: BLE001 — any broker failure: the run is safe in SQL
        log.exception("could not enqueue run %s; the reaper will retry", run_id)
        return False
    lifecycle.mark_enqueued(session, run_id)
    return True


def get(session: Session, *, run_id: int) -> Run | None:
    return session.get(Run, run_id)


def get_all(session: Session, *, status: str | None = None, method: str | None = None,
            dataset_id: int | None = None, base_model: str | None = None, tag: str | None = None,
            visible: set[int] | None = None, q: str | None = None, limit: int = 500) -> list[Run]:
    """The newest `limit` runs that match every filter given, newest first. `q`: part of the name, any case."""
    query = select(Run).order_by(Run.id.desc()).limit(limit)
    if q:
        query = query.where(Run.name.icontains(q, autoescape=True))  # % and _ in q match themselves
    if base_model:
        query = query.where(Run.base_model == base_model)
    if tag:
        query = query.where(Run.id.in_(select(RunTag.run_id).where(RunTag.tag == tag)))
    if visible is not None:
        query = query.where(Run.project_id.in_(visible))
    if status:
        query = query.where(Run.status == status)
    if method:
        query = query.where(Run.method == method)
    if dataset_id is not None:
        query = query.where(Run.dataset_id == dataset_id)
    return list(session.scalars(query))


def update(session: Session, *, run: Run, body: RunUpdate) -> Run:
    """Rename, retag or annotate a run; fields left out of the body stay as they are."""
    if body.name is not None:
        run.name = body.name
    if body.notes is not None:
        run.notes = body.notes
    if body.tags is not None:
        run.tag_rows = [RunTag(tag=t) for t in body.tags]
    session.commit()
    session.refresh(run)
    return run


def delete(session: Session, *, settings: Settings, run: Run) -> None:
    from app.artifacts import service as artifacts_service

    run_id = run.id
    session.delete(run)
    notify.changed(session, run_id)  # its open streams end now
    session.commit()
    artifacts_service.delete_for_run(session, settings=settings, run_id=run_id)


def reap(session: Session, settings: Settings) -> list[int]:
    """Recover runs whose worker died and re-send queued runs whose message may be lost."""
    lifecycle.recover_expired(session, settings.max_attempts)
    resent = []
    for run_id in lifecycle.stale_queued(session, timedelta(seconds=settings.requeue_after_seconds)):
        if enqueue(session, run_id):
            resent.append(run_id)
    return resent
