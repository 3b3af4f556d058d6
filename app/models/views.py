from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.db import get_db
from app.models import service
from app.models.inspect import ModelSourceError
from app.models.schemas import BaseModelCreate, BaseModelOut
from app.templating import render

router = APIRouter(prefix="/api/models", tags=["models"])
pages = APIRouter(include_in_schema=False)
DB = Annotated[Session, Depends(get_db)]


@router.get("", response_model=list[BaseModelOut])
def list_models(session: DB):
    service.ensure_bundled(session)
    return service.get_all(session)


@router.post("", status_code=201, response_model=BaseModelOut)
def register_model(body: BaseModelCreate, session: DB):
    try:
        return service.create(session, name=body.name, source=body.source)
    except ModelSourceError as e:
        raise HTTPException(422, str(e)) from None


@pages.get("/models")
def models_page(request: Request):
    return render(request, "models/list.html", "Base models")
