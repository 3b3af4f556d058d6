"""Datasets: store an upload after it scanned clean, list, page rows, delete."""
import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.datasets.models import Dataset
from app.datasets.reader import iter_rows
from app.datasets.scan import _jsonable, scan
from app.runs.models import Run

if TYPE_CHECKING:  # workers import this module; they need no web stack
    from app.datasets.upload import ReceivedUpload


def dataset_file(settings: Settings, dataset: Dataset) -> Path:
    return settings.upload_dir / dataset.storage_name


def create_from_upload(session: Session, *, settings: Settings, upload: "ReceivedUpload", name: str | None,
                       declared_format: str | None, has_header: bool | None, project_id: int | None = None,
                       owner_id: int | None = None) -> Dataset:
    """Scan the received file; keep it and add the row only if everything is fine (else nothing is left)."""
    assert upload.path is not None
    final = None
    try:
        result = scan(upload.path, upload.filename, declared_format, has_header)
        storage_name = f"{upload.sha256[:16]}-{os.urandom(6).hex()}.{result.format}"
        final = settings.upload_dir / storage_name
        upload.path.rename(final)
        dataset = Dataset(
            name=(name or upload.filename or f"dataset.{result.format}").strip()[:200],
            format=result.format, has_header=result.has_header, num_rows=result.num_rows,
            columns=result.columns, preview=result.preview, sha256=upload.sha256,
            size_bytes=upload.size_bytes, storage_name=storage_name, project_id=project_id, owner_id=owner_id,
        )
        session.add(dataset)
        session.commit()
        return dataset
    except BaseException:
        session.rollback()
        upload.path.unlink(missing_ok=True)
        if final is not None:
            final.unlink(missing_ok=True)
        raise


def get(session: Session, *, dataset_id: int) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def get_all(session: Session, *, visible: set[int] | None = None) -> list[Dataset]:
    """Newest first; `visible` = the project ids to include (None: all)."""
    query = select(Dataset).order_by(Dataset.id.desc())
    if visible is not None:
        query = query.where(Dataset.project_id.in_(visible))
    return list(session.scalars(query))


def rows(settings: Settings, dataset: Dataset, *, offset: int, limit: int) -> list[dict]:
    it = iter_rows(dataset_file(settings, dataset), dataset.format, dataset.has_header)
    return [{k: _jsonable(v) for k, v in row.items()} for row in itertools.islice(it, offset, offset + limit)]


def runs_using(session: Session, *, dataset_id: int) -> list[int]:
    return list(session.scalars(select(Run.id).where((Run.dataset_id == dataset_id) | (Run.eval_dataset_id == dataset_id))))


def delete(session: Session, *, settings: Settings, dataset: Dataset) -> None:
    path = dataset_file(settings, dataset)
    session.delete(dataset)
    session.commit()
    path.unlink(missing_ok=True)
