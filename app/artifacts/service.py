"""Artifact storage: run outputs under the artifact dir, at paths peftlab chose (never user input).

With PEFTLAB_STORAGE_URL the artifact dir is the worker's working area: a finished run's outputs are
uploaded to the object store under the same relative paths (Artifact.path is the key, or the folder of
keys), each downloadable folder also as one zip beside it (`runs/7/adapter.zip`) that downloads stream
or presign, and the working copy goes."""
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.artifacts.models import Artifact
from app.config import Settings
from app.storage import service as storage

# Folders users download as a zip; with an object store the worker uploads the zip beside the folder.
DOWNLOADS = ("adapter", "adapter_last", "merged")


def run_dir(settings: Settings, run_id: int) -> Path:
    return settings.resolved_artifact_dir / "runs" / str(int(run_id))


def run_artifact_dir(settings: Settings, run_id: int, kind: str) -> Path:
    """A fresh, empty directory for one kind of output of a run (a retried run starts clean)."""
    path = run_dir(settings, run_id) / kind
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def record_artifact(session: Session, run_id: int, kind: str, path: Path, size_bytes: int | None = None, *,
                    commit: bool = True) -> None:
    """Remember an output (upsert on run + kind). The stored path is relative to the artifact dir.

    commit=False leaves it to the caller's transaction (a worker's fenced final write)."""
    from app.config import get_settings

    rel = str(path.resolve().relative_to(get_settings().resolved_artifact_dir))
    size = dir_size(path) if size_bytes is None else size_bytes
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(Artifact).values(run_id=run_id, kind=kind, path=rel, size_bytes=size)
    session.execute(stmt.on_conflict_do_update(index_elements=["run_id", "kind"],
                                               set_={"path": rel, "size_bytes": size}))
    if commit:
        session.commit()


def get(session: Session, *, run_id: int, kind: str) -> Artifact | None:
    return session.scalar(select(Artifact).where(Artifact.run_id == run_id, Artifact.kind == kind))


def for_run(session: Session, *, run_id: int) -> list[Artifact]:
    return list(session.scalars(select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.kind)))


def absolute_path(settings: Settings, artifact: Artifact) -> Path:
    """Resolve a stored relative path, refusing anything that would leave the artifact dir."""
    root = settings.resolved_artifact_dir
    path = (root / artifact.path).resolve()
    if not path.is_relative_to(root):
        raise PermissionError("artifact path escapes the artifact directory")
    return path


def zip_to_tempfile(settings: Settings, source: Path) -> Path:
    """Zip a directory (files at the zip's root) into a temp file the response streams and deletes."""
    tmp_dir = settings.data_dir.resolve() / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=".zip", dir=tmp_dir)
    try:
        with open(fd, "wb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for path in sorted(source.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    zf.write(path, path.relative_to(source).as_posix())
    except BaseException:
        Path(name).unlink(missing_ok=True)  # a full disk leaves no half-written zip behind
        raise
    return Path(name)


def delete_for_run(session: Session, *, settings: Settings, run_id: int) -> None:
    """A run's outputs, rows and files (or objects). Also how a failed run ends: it keeps nothing half-written."""
    session.execute(sql_delete(Artifact).where(Artifact.run_id == run_id))
    session.commit()
    storage.artifact_store(settings).delete_prefix(f"runs/{int(run_id)}/")
    shutil.rmtree(run_dir(settings, run_id), ignore_errors=True)  # a worker's working copy (S3), or the files


def key_of(settings: Settings, path: Path) -> str:
    """The storage key of a file or folder in the artifact dir (what Artifact.path holds)."""
    return path.resolve().relative_to(settings.resolved_artifact_dir).as_posix()


def publish(settings: Settings, artifacts: dict[str, Path]) -> None:
    """Put a finished run's outputs into the object store (a no-op on the local default, where they are
    in place already). Checkpoints are left out: they went up as they were written."""
    store = storage.artifact_store(settings)
    for kind, path in artifacts.items():
        key = key_of(settings, path)
        if kind == "checkpoints" or store.local_path(key) is not None:
            continue
        if not path.is_dir():
            store.put_file(key, path)
            continue
        storage.upload_tree(store, path, key)
        if kind in DOWNLOADS:
            archive = zip_to_tempfile(settings, path)
            try:
                store.put_file(f"{key}.zip", archive)
            finally:
                archive.unlink(missing_ok=True)


def discard(settings: Settings, artifacts: dict[str, Path]) -> None:
    """Remove outputs that were not kept (a cancel won the race with the save): files and objects."""
    store = storage.artifact_store(settings)
    for kind, path in artifacts.items():
        key = key_of(settings, path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        if store.local_path(key) is None:
            store.delete_prefix(f"{key}/")
            store.delete(key)
            store.delete(f"{key}.zip")


def local_copy(settings: Settings, artifact: Artifact) -> Path:
    """A folder artifact on this machine's disk: in place, or this host's cached copy from the object store."""
    if storage.is_remote(settings):
        return storage.local_tree(settings, storage.artifact_store(settings), artifact.path)
    return absolute_path(settings, artifact)


def read_predictions(settings: Settings, artifact: Artifact) -> list[dict] | None:
    """A JSON-lines artifact's rows, wherever it is stored; None when its file is missing."""
    if not storage.is_remote(settings):
        path = absolute_path(settings, artifact)
        return read_jsonl(path) if path.exists() else None
    store = storage.artifact_store(settings)
    keys = [o.key for o in store.list(artifact.path) if o.key.endswith(".jsonl")]
    if not keys:
        return None
    rows, rest = [], b""
    for chunk in store.iter_bytes(keys[0]):  # streamed: the server holds the rows, not the file twice
        *lines, rest = (rest + chunk).split(b"\n")
        rows += [json.loads(line) for line in lines if line.strip()]
    return rows + ([json.loads(rest)] if rest.strip() else [])


def read_jsonl(path: Path) -> list[dict]:
    """A JSON-lines artifact (a file, or the one .jsonl file in a directory)."""
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            return []
        path = files[0]
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
