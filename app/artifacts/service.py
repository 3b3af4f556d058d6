"""Artifact storage: run outputs under the artifact dir, at paths peftlab chose (never user input)."""
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
    """A run's outputs, rows and files. Also how a failed run ends: it keeps nothing half-written."""
    session.execute(sql_delete(Artifact).where(Artifact.run_id == run_id))
    session.commit()
    shutil.rmtree(run_dir(settings, run_id), ignore_errors=True)


def read_jsonl(path: Path) -> list[dict]:
    """A JSON-lines artifact (a file, or the one .jsonl file in a directory)."""
    import json

    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            return []
        path = files[0]
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
