"""The base-model registry: the bundled MiniLM plus registered local directories and hub ids."""
import re
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import hub, param_count
from app.models.inspect import ModelSourceError, model_facts
from app.models.models import BaseModel
from app.models.param_count import Estimate
from app.runs.schemas import Columns, Training

from app.models.bundled import BUNDLED_ID, BUNDLED_SOURCE, bundled_dir

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


def ensure_bundled(session: Session) -> None:
    """Register the bundled MiniLM once (its path depends on where the package is installed). Replicas that
    start together on a new database race to insert it: the one that loses finds it registered."""
    if session.get(BaseModel, BUNDLED_ID) is not None:
        return
    facts = model_facts(bundled_dir())
    session.add(BaseModel(id=BUNDLED_ID, name="all-MiniLM-L6-v2 (bundled)", source=BUNDLED_SOURCE,
                          architecture=facts["architecture"], num_parameters=facts["num_parameters"], facts=facts))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        if session.get(BaseModel, BUNDLED_ID) is None:
            raise  # not the race: something else is wrong


def get(session: Session, *, model_id: str) -> BaseModel | None:
    return session.get(BaseModel, model_id)


def get_all(session: Session) -> list[BaseModel]:
    return list(session.scalars(select(BaseModel).order_by(BaseModel.created_at)))


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64] or "model"


def allowed_directory(source: str, allowed: list[Path]) -> Path:
    """The real directory a source names, only if it lies inside an allow-listed directory.

    Symlinks and '..' are resolved first, so neither can step outside the allow-list."""
    if "\\" in source or "\x00" in source:
        raise ModelSourceError("A model directory is an absolute POSIX path (no backslashes).")
    path = Path(source)
    if not path.is_absolute():
        raise ModelSourceError("A local model directory must be an absolute path.")
    real = path.resolve()
    if not any(real == root or real.is_relative_to(root) for root in allowed):
        shown = ", ".join(str(r) for r in allowed)
        raise ModelSourceError(f"{source} is outside the directories models may be registered from ({shown}); "
                               "an admin can add one with PEFTLAB_MODEL_DIRS.")
    if not real.is_dir():
        raise ModelSourceError(f"{source} is not a directory on the server.")
    return real


def create(session: Session, *, name: str, source: str, allowed: list[Path]) -> BaseModel:
    """Register a local directory (inside `allowed`) or a hub id ('org/name'; never a URL)."""
    source = source.strip()
    # Anything that exists as a path (also relative, which from_pretrained would load as a directory)
    # is a local source and must pass the allow-list.
    if source.startswith(("/", ".", "~", "\\")) or "\\" in source or Path(source).exists():
        real = allowed_directory(source, allowed)
        facts = model_facts(real)
        source = str(real)
    elif HUB_ID.match(source) and ".." not in source:
        facts = hub.hub_facts(source)  # refuses an id the hub does not know, or a hub it cannot reach
    else:
        raise ModelSourceError("source must be an absolute local directory or a hub id like 'org/name' (no URLs).")
    model_id = slug(name)
    base, n = model_id, 2
    while session.get(BaseModel, model_id) is not None:
        model_id = f"{base[:60]}-{n}"
        n += 1
    model = BaseModel(id=model_id, name=name.strip(), source=source, architecture=facts.get("architecture"),
                      num_parameters=facts.get("num_parameters"), facts=facts)
    session.add(model)
    session.commit()
    return model


def resolve_source(session: Session, model_id: str) -> str:
    """What transformers' from_pretrained should load for this model id (a local path or a hub id)."""
    model = session.get(BaseModel, model_id)
    if model is None:
        if model_id == BUNDLED_ID:
            return str(bundled_dir())
        raise LookupError(f"Base model {model_id!r} is not registered.")
    if model.source == BUNDLED_SOURCE:
        return str(bundled_dir())
    return model.source


def shape_facts(session: Session, model: BaseModel) -> dict:
    """The model's stored facts; re-read from its directory when they predate a fact the
    parameter estimate and the run checks need (models registered before max_positions was stored)."""
    if "max_positions" in model.facts or not model.facts.get("hidden_size"):
        return model.facts
    source = Path(resolve_source(session, model.id))
    if not source.is_dir():
        return model.facts
    try:
        return {**model.facts, **model_facts(source)}
    except (ModelSourceError, OSError):
        return model.facts


def estimate(session: Session, *, model: BaseModel, task: str, num_labels: int, method: dict,
             visible_projects: set[int] | None = None) -> Estimate:
    """Trainable parameters of `method` on `model` (app.models.param_count). AdapterFusion is
    counted at the fused adapters' locations, read from those runs' configs."""
    from app.runs.models import Run

    variant = None
    if method["type"] == "adapter_fusion":
        runs = [session.get(Run, run_id) for run_id in method["adapter_run_ids"]]
        variants = {r.config.get("method", {}).get("variant") for r in runs
                    if r is not None and r.method == "adapter"
                    and (visible_projects is None or r.project_id in visible_projects)}
        variant = variants.pop() if len(variants) == 1 and None not in variants else None
    return param_count.estimate(shape_facts(session, model), task, num_labels, method, fusion_variant=variant)


def memory_estimate(session: Session, *, model: BaseModel, body, count: Estimate,
                    visible_projects: set[int] | None = None) -> dict:
    """memory_bytes, memory and workers of POST /api/models/{id}/estimate (EstimateRequest `body`).

    The figure is for a GPU worker (auto precision: bf16) unless every worker seen in the last hour
    is a CPU; `workers` says for each of those whether it could take the run (app.runs.checks)."""
    from app.runs.checks import MemoryQuery, device_fit, run_memory
    from app.worker_status import service as worker_status

    training = _training(body.training or {})
    labels = _columns(body.columns).label_names if body.columns else None
    query = MemoryQuery(body.task, len(labels) if labels else body.num_labels, body.method.model_dump(), training)
    facts = shape_facts(session, model)
    workers = worker_status.recent(session)
    kind = "cpu" if workers and all((w.device or {}).get("kind") == "cpu" for w in workers) else "cuda"
    estimate = run_memory(query, facts, kind, count=count)
    fits = []
    for w in workers:
        fit = device_fit(query, facts, w.device, w.memory_bytes, count=count)
        fits.append({"name": w.name, "device": w.device, "memory_bytes": w.memory_bytes,
                     "needed_bytes": fit.needed_bytes, "usable_bytes": fit.usable_bytes, "fits": fit.fits})
    return {"memory_bytes": estimate.total if estimate else None,
            "memory": estimate.as_dict() if estimate else None, "workers": fits}


QUANTIZATIONS = (None, "4bit", "8bit")


def _training(raw: dict) -> dict:
    """The body's training section checked like a run config's; training.quantization is read
    here when the run schema does not have it yet (it is added in parallel)."""
    raw = dict(raw)
    quantization = raw.get("quantization")
    if "quantization" not in Training.model_fields:
        raw.pop("quantization", None)
    if quantization not in QUANTIZATIONS:
        raise ValidationError.from_exception_data("EstimateRequest", [{
            "type": "literal_error", "loc": ("training", "quantization"), "input": quantization,
            "ctx": {"expected": "null, '4bit' or '8bit'"}}])
    try:
        checked = Training.model_validate(raw, strict=False)
    except ValidationError as e:
        raise _under("training", e) from None
    return {**checked.model_dump(), "quantization": quantization}


def _columns(raw: dict) -> Columns:
    try:
        return Columns.model_validate(raw, strict=False)
    except ValidationError as e:
        raise _under("columns", e) from None


def _under(section: str, e: ValidationError) -> ValidationError:
    """The errors of a section validated on its own, located in the request body."""
    return ValidationError.from_exception_data("EstimateRequest", [
        {"type": err["type"], "loc": (section, *err["loc"]), "input": err.get("input"),
         **({"ctx": err["ctx"]} if "ctx" in err else {})} for err in e.errors()])
