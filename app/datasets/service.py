"""Datasets: store an upload after it scanned clean, list, page rows, delete."""
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.datasets.models import Dataset
from app.datasets.reader import ReadLimits, iter_rows
from app.datasets.sandbox import scan_file
from app.datasets.scan import ScanLimits, preview_row
from app.runs.models import Run
from app.storage import service as storage

if TYPE_CHECKING:  # workers import this module; they need no web stack
    from app.datasets.upload import ReceivedUpload

log = logging.getLogger("peftlab.datasets")
# A stored preview bigger than this (rows saved before previews were bounded) is not loaded at all.
MAX_STORED_PREVIEW_CHARS = 4 * 1024 * 1024
# One page of rows holds at most this many cells: many columns mean fewer rows per page.
MAX_CELLS_PER_PAGE = 20_000


def dataset_file(settings: Settings, dataset: Dataset) -> Path:
    """The file to read the dataset from: in the upload dir, or this host's copy of the stored object."""
    return stored_file(settings, dataset.storage_name)


def stored_file(settings: Settings, storage_name: str) -> Path:
    return storage.local_file(settings, storage.dataset_store(settings), storage_name)


def keep_file(settings: Settings, storage_name: str, path: Path) -> None:
    """Move a scanned upload into the dataset store: renamed into the upload dir, or streamed to the
    object store (and kept as this server's cached copy, so its row pages need no download)."""
    store = storage.dataset_store(settings)
    if (final := store.local_path(storage_name)) is not None:
        path.rename(final)
        return
    store.put_file(storage_name, path)
    storage.object_cache(settings).adopt(store, storage_name, path)


def remove_file(settings: Settings, storage_name: str) -> None:
    store = storage.dataset_store(settings)
    store.delete(storage_name)
    if store.local_path(storage_name) is None:
        storage.object_cache(settings).forget(store, storage_name)


def create_from_upload(session: Session, *, settings: Settings, upload: "ReceivedUpload", name: str | None,
                       declared_format: str | None, has_header: bool | None, project_id: int | None = None,
                       owner_id: int | None = None) -> Dataset:
    """Scan the received file; keep it and add the row only if everything is fine (else nothing is left)."""
    assert upload.path is not None
    storage_name = None
    try:
        # In a capped child process: a hostile file fails there, never in the server.
        result = scan_file(upload.path, upload.filename, declared_format, has_header, settings)
        storage_name = f"{upload.sha256[:16]}-{os.urandom(6).hex()}.{result.format}"
        keep_file(settings, storage_name, upload.path)
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
        if storage_name is not None:
            remove_file(settings, storage_name)
        raise


def get(session: Session, *, dataset_id: int) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def get_all(session: Session, *, visible: set[int] | None = None) -> list[Dataset]:
    """Newest first; `visible` = the project ids to include (None: all)."""
    query = select(Dataset).order_by(Dataset.id.desc())
    if visible is not None:
        query = query.where(Dataset.project_id.in_(visible))
    return list(session.scalars(query))


def stored_preview(session: Session, *, dataset: Dataset) -> list[dict]:
    """The preview saved at upload, or [] when it is too big or cannot be read back (rows saved by older versions)."""
    size = session.scalar(select(func.length(cast(Dataset.preview, Text))).where(Dataset.id == dataset.id))
    if size is not None and size > MAX_STORED_PREVIEW_CHARS:
        log.warning("dataset %s: stored preview of %s characters not shown", dataset.id, size)
        return []
    try:
        preview = dataset.preview
    except (RecursionError, ValueError, TypeError):  # nesting deeper than the JSON decoder goes
        session.rollback()
        log.warning("dataset %s: stored preview cannot be decoded", dataset.id)
        return []
    return preview if isinstance(preview, list) else []


def page_limit(dataset: Dataset, limit: int) -> int:
    """Rows per page, fewer when the dataset is wide, so a page is bounded in cells."""
    return max(1, min(limit, MAX_CELLS_PER_PAGE // max(1, len(dataset.columns or []))))


def rows(settings: Settings, dataset: Dataset, *, offset: int, limit: int) -> list[dict]:
    """One page of rows, cells cut like the preview's; rows before it are skipped without parsing where possible."""
    limits = ScanLimits.from_settings(settings)
    it = iter_rows(dataset_file(settings, dataset), dataset.format, dataset.has_header,
                   ReadLimits.from_settings(settings), skip=offset, column_names=dataset.column_names)
    page = []
    for row in it:
        page.append(preview_row(row, limits))
        if len(page) >= limit:
            break
    return page


def runs_using(session: Session, *, dataset_id: int) -> list[int]:
    return list(session.scalars(select(Run.id).where((Run.dataset_id == dataset_id) | (Run.eval_dataset_id == dataset_id))))


def delete(session: Session, *, settings: Settings, dataset: Dataset) -> None:
    storage_name = dataset.storage_name
    session.delete(dataset)
    session.commit()
    remove_file(settings, storage_name)
