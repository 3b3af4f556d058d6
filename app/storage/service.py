"""Which store holds what: datasets and run artifacts, in local directories by default or in one
S3-compatible bucket when PEFTLAB_STORAGE_URL=s3://bucket/prefix is set.

Local (the default): datasets in <data dir>/datasets, artifacts in PEFTLAB_ARTIFACT_DIR, exactly the
layout peftlab always had; everything works in place. S3: <prefix>/datasets/… and <prefix>/artifacts/…;
workers write a run's outputs on their own disk (PEFTLAB_ARTIFACT_DIR is then their working area),
upload them, and read datasets and other runs' adapters through a local cache (app/storage/cache.py).
"""
import threading
from pathlib import Path
from urllib.parse import urlparse

from app.config import Settings
from app.storage.base import ObjectStore
from app.storage.cache import ObjectCache
from app.storage.local import LocalStore

_stores: dict[tuple, ObjectStore] = {}
_lock = threading.Lock()


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of s3://bucket/prefix."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"PEFTLAB_STORAGE_URL must look like s3://bucket/prefix, not {url!r}")
    return parsed.netloc, parsed.path.strip("/")


def _store(key: tuple, make) -> ObjectStore:
    with _lock:  # one client per process and place (boto3 clients are thread-safe and slow to make)
        if key not in _stores:
            _stores[key] = make()
        return _stores[key]


def _s3(settings: Settings, area: str) -> ObjectStore:
    from app.storage.s3 import S3Store

    bucket, prefix = parse_url(settings.storage_url)
    return _store(("s3", bucket, prefix, area), lambda: S3Store(bucket, f"{prefix}/{area}".strip("/")))


def dataset_store(settings: Settings) -> ObjectStore:
    """Uploaded dataset files, each under its storage_name."""
    if settings.storage_url:
        return _s3(settings, "datasets")
    return _store(("local", str(settings.upload_dir)), lambda: LocalStore(settings.upload_dir))


def artifact_store(settings: Settings) -> ObjectStore:
    """Run outputs under runs/<id>/<kind>/… (Artifact.path is the key, or the folder of keys)."""
    if settings.storage_url:
        return _s3(settings, "artifacts")
    return _store(("local", str(settings.resolved_artifact_dir)), lambda: LocalStore(settings.resolved_artifact_dir))


def is_remote(settings: Settings) -> bool:
    return bool(settings.storage_url)


def object_cache(settings: Settings) -> ObjectCache:
    return ObjectCache(settings.resolved_storage_cache_dir, settings.storage_cache_bytes)


def local_file(settings: Settings, store: ObjectStore, key: str) -> Path:
    """A path to read the object at: the file itself in a local store, else the cached copy (downloaded once
    per object version). MissingObject when there is none."""
    path = store.local_path(key)
    if path is not None:
        return path
    return object_cache(settings).file(store, key)


def local_tree(settings: Settings, store: ObjectStore, prefix: str) -> Path:
    """A local folder holding the objects under `prefix`/ (an adapter directory), like local_file."""
    path = store.local_path(prefix)
    if path is not None:
        return path
    return object_cache(settings).tree(store, prefix)


def upload_tree(store: ObjectStore, folder: Path, prefix: str) -> None:
    """Replace what is under `prefix`/ with the files of `folder` (a retried attempt leaves nothing stale)."""
    store.delete_prefix(f"{prefix}/")
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        store.put_file(f"{prefix}/{path.relative_to(folder).as_posix()}", path)
