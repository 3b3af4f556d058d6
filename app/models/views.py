from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.auth.deps import Admin, Visible
from app.config import Settings, get_settings
from app.db import get_db
from app.models import service
from app.models.inspect import ModelSourceError
from app.models.param_count import EstimateError
from app.models.schemas import BaseModelCreate, BaseModelOut, EstimateOut, EstimateRequest
from app.templating import render

router = APIRouter(prefix="/api/models", tags=["models"])
pages = APIRouter(include_in_schema=False)
DB = Annotated[Session, Depends(get_db)]


@router.get("", response_model=list[BaseModelOut])
def list_models(session: DB):
    service.ensure_bundled(session)
    return service.get_all(session)


@router.post("", status_code=201, response_model=BaseModelOut)
def register_model(body: BaseModelCreate, session: DB, admin: Admin,
                   settings: Annotated[Settings, Depends(get_settings)]):
    """Admins only: a local directory inside PEFTLAB_MODEL_DIRS, or a hub id (its config.json is fetched
    now: an id the hub does not know, or a hub the server cannot reach, is a 422 that says which)."""
    try:
        return service.create(session, name=body.name, source=body.source, allowed=settings.allowed_model_dirs)
    except ModelSourceError as e:
        raise HTTPException(422, str(e)) from None


@router.post("/{model_id}/estimate", response_model=EstimateOut)
def estimate_parameters(model_id: str, body: EstimateRequest, session: DB, visible: Visible):
    """How many parameters a method config would train on this model, from its config alone."""
    service.ensure_bundled(session)
    model = service.get(session, model_id=model_id)
    if model is None:
        raise HTTPException(404, f"Base model {model_id!r} is not registered; see /api/models.")
    try:
        result = service.estimate(session, model=model, task=body.task, num_labels=body.num_labels,
                                  method=body.method.model_dump(), visible_projects=visible)
        memory = service.memory_estimate(session, model=model, body=body, count=result, visible_projects=visible)
    except EstimateError as e:
        raise HTTPException(422, str(e)) from None
    except ValidationError as e:
        raise HTTPException(422, [{"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]}
                                  for err in e.errors(include_url=False, include_context=False)]) from None
    return EstimateOut(trainable_params=result.trainable_params, total_params=result.total_params,
                       percent=result.percent, exact=result.exact, note=result.note, **memory)


@pages.get("/models")
def models_page(request: Request):
    return render(request, "models/list.html", "Base models")
