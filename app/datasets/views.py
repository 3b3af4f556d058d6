from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app.auth import service as auth_service
from app.auth.deps import Viewer, Visible, can_see
from app.auth.models import Project
from app.config import Settings, get_settings
from app.datasets import service
from app.datasets.models import Dataset
from app.datasets.reader import DatasetError
from app.datasets import distribution as distribution_service
from app.datasets import renaming
from app.datasets.sandbox import ScannerBusy
from app.datasets.schemas import DatasetDetailOut, DatasetOut, DatasetUpdate, DistributionOut, RowsOut, ValueCount
from app.datasets.upload import UploadError, receive_upload
from app.db import get_db
from app.ids import Id, parse_id
from app.templating import render

router = APIRouter(prefix="/api/datasets", tags=["datasets"])
pages = APIRouter(include_in_schema=False)

DB = Annotated[Session, Depends(get_db)]
Conf = Annotated[Settings, Depends(get_settings)]


def dataset_or_404(dataset_id: Id, session: DB, visible: Visible) -> Dataset:
    """The dataset, if the viewer may see it; someone else's answers exactly like a missing one."""
    dataset = service.get(session, dataset_id=dataset_id)
    if dataset is None or not can_see(visible, dataset.project_id):
        raise HTTPException(404, f"Dataset {dataset_id} not found.")
    return dataset


def _parse_has_header(value: str | None) -> bool | None:
    if value is None or value.strip().lower() in ("", "auto"):
        return None
    if value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if value.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise HTTPException(422, "has_header must be true, false or auto.")


def _target_project(session: Session, user, visible: set[int] | None, raw: str | None) -> int:
    """The project an upload goes to: the one named (if the viewer is in it), else the viewer's own."""
    if raw is None or not raw.strip():
        return auth_service.default_project_id(session, user=user)
    project_id = parse_id(raw)
    if project_id is None or not can_see(visible, project_id) or session.get(Project, project_id) is None:
        raise HTTPException(404, f"Project {raw.strip()[:20]!r} not found.")
    return project_id


def _detail(session: Session, dataset: Dataset) -> DatasetDetailOut:
    return DatasetDetailOut(**DatasetOut.model_validate(dataset).model_dump(),
                            preview=service.stored_preview(session, dataset=dataset))


@router.post("", status_code=201, response_model=DatasetDetailOut,
             openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["file"], "properties": {
                     "file": {"type": "string", "format": "binary"}, "name": {"type": "string"},
                     "format": {"type": "string", "enum": ["jsonl", "json", "csv", "tsv", "parquet"]},
                     "has_header": {"type": "boolean"},
                     "project_id": {"type": "integer", "description": "default: your own project"}}}}}}})
async def upload_dataset(request: Request, session: DB, settings: Conf, user: Viewer, visible: Visible):
    """Upload a dataset file (JSONL, JSON array, CSV, TSV, Parquet), streamed to disk."""
    try:
        upload = await receive_upload(request, settings.upload_dir, settings.max_upload_bytes)
    except UploadError as e:
        raise HTTPException(e.status_code, e.detail) from None
    fields = upload.fields
    try:
        project_id = _target_project(session, user, visible, fields.get("project_id"))
        has_header = _parse_has_header(fields.get("has_header"))
        declared = (fields.get("format") or "").strip().lower() or None
        if declared == "auto":
            declared = None
        dataset = await run_in_threadpool(
            service.create_from_upload, session, settings=settings, upload=upload,
            name=fields.get("name") or None, declared_format=declared, has_header=has_header,
            project_id=project_id, owner_id=user.id)
        return await run_in_threadpool(_detail, session, dataset)
    except DatasetError as e:
        raise HTTPException(422, str(e)) from None
    except ScannerBusy as e:
        raise HTTPException(503, str(e), headers={"Retry-After": "60"}) from None
    finally:
        if upload.path is not None:
            upload.path.unlink(missing_ok=True)  # a no-op when the file was kept (it was renamed)
        upload.release()


@router.get("", response_model=list[DatasetOut])
def list_datasets(session: DB, visible: Visible):
    return service.get_all(session, visible=visible)


@router.get("/{dataset_id}", response_model=DatasetDetailOut)
def get_dataset(dataset: Annotated[Dataset, Depends(dataset_or_404)], session: DB):
    return _detail(session, dataset)


@router.get("/{dataset_id}/rows", response_model=RowsOut)
def get_rows(dataset: Annotated[Dataset, Depends(dataset_or_404)], settings: Conf,
             offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 50):
    """A page of rows; `limit` in the answer is what was used (wide datasets get fewer rows per page)."""
    limit = service.page_limit(dataset, limit)
    try:
        rows = service.rows(settings, dataset, offset=min(offset, dataset.num_rows), limit=limit)  # past the end: none
    except DatasetError as e:  # a file stored before today's checks may not read back
        raise HTTPException(422, f"The dataset file cannot be read: {e}") from None
    return RowsOut(offset=offset, limit=limit, total=dataset.num_rows, rows=rows)


@router.patch("/{dataset_id}", response_model=DatasetDetailOut)
def update_dataset(body: DatasetUpdate, dataset: Annotated[Dataset, Depends(dataset_or_404)], session: DB):
    """Name the columns: `{"columns": {"column_1": "label", …}}` or every name in order. The file stays as it
    was; the names apply wherever rows are read (pages, training, Playground samples)."""
    try:
        renaming.rename(session, dataset=dataset, requested=body.columns,
                        preview=service.stored_preview(session, dataset=dataset))
    except renaming.RenameError as e:
        raise HTTPException(e.status, str(e)) from None
    return _detail(session, dataset)


@router.get("/{dataset_id}/distribution", response_model=DistributionOut)
def get_distribution(dataset: Annotated[Dataset, Depends(dataset_or_404)], settings: Conf,
                     column: Annotated[str, Query(min_length=1, max_length=1000)]):
    """How often each value of `column` occurs (a label column's class balance): the 50 most common, the
    rest as `other`. One pass over the file, stopped after 20 s (`complete` says whether it read every row)."""
    names = [c["name"] for c in dataset.columns]
    if column not in names:
        shown = ", ".join(repr(n[:80]) for n in names[:20])
        raise HTTPException(422, f"There is no column {column[:80]!r} (the columns: {shown}).")
    try:
        counted = distribution_service.distribution(settings, dataset, column)
    except DatasetError as e:
        raise HTTPException(422, f"The dataset file cannot be read: {e}") from None
    return DistributionOut(column=column, total_rows=counted.total_rows, rows_counted=counted.rows_counted,
                           complete=counted.complete, missing=counted.missing, distinct=len(counted.counts),
                           values=[ValueCount(value=v, count=n) for v, n in counted.top()],
                           other=counted.other(), untracked=counted.untracked)


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(dataset: Annotated[Dataset, Depends(dataset_or_404)], session: DB, settings: Conf):
    used_by = service.runs_using(session, dataset_id=dataset.id)
    if used_by:
        shown = ", ".join(str(i) for i in used_by[:10])
        raise HTTPException(409, f"Runs {shown} use this dataset; delete them first.")
    service.delete(session, settings=settings, dataset=dataset)


@pages.get("/datasets")
def datasets_page(request: Request):
    return render(request, "datasets/list.html", "Datasets")


@pages.get("/datasets/{dataset_id}")
def dataset_page(request: Request, dataset: Annotated[Dataset, Depends(dataset_or_404)]):
    return render(request, "datasets/detail.html", dataset.name, dataset_id=dataset.id)
