"""A host's copies of remote objects, so repeated runs on the same dataset (or adapter) download it once.

An entry is named by a hash of the store, the key and the object's etag: a changed object is a new
entry, a stale one is never served. Entries are written under a temporary name and renamed into
place (concurrent workers never read half a file); a hit refreshes the entry's mtime, and adding one
evicts the least recently used past the byte budget.
"""
import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path

from app.storage.base import MissingObject, ObjectStore

log = logging.getLogger("peftlab.storage")
_DONE = ".complete"  # written last into a cached folder


class ObjectCache:
    def __init__(self, directory: Path, max_bytes: int):
        self.directory, self.max_bytes = directory, max_bytes

    @staticmethod
    def _stem(store: ObjectStore, key: str) -> str:
        return hashlib.sha256(f"{store.name}\0{key}".encode()).hexdigest()[:24]

    def _file_path(self, store: ObjectStore, key: str, etag: str) -> Path:
        version = hashlib.sha256(etag.encode()).hexdigest()[:12]
        suffix = "".join(Path(key).suffixes[-2:])[:16]
        return self.directory / "files" / f"{self._stem(store, key)}-{version}{suffix}"

    def file(self, store: ObjectStore, key: str) -> Path:
        path = self._file_path(store, key, store.stat(key).etag)
        if path.is_file():
            _touch(path)
            return path
        store.get_file(key, path)
        self.evict(keep=path)
        return path

    def adopt(self, store: ObjectStore, key: str, source: Path) -> None:
        """Keep a file just uploaded under `key` as its cached copy (moved, not copied)."""
        path = self._file_path(store, key, store.stat(key).etag)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, path)
        self.evict(keep=path)

    def forget(self, store: ObjectStore, key: str) -> None:
        for path in (self.directory / "files").glob(f"{self._stem(store, key)}-*"):
            path.unlink(missing_ok=True)

    def tree(self, store: ObjectStore, prefix: str) -> Path:
        objects = store.list(f"{prefix}/")
        if not objects:
            raise MissingObject(f"{prefix}/")
        listing = "\n".join(f"{o.key}\0{o.etag}\0{o.size}" for o in objects)
        folder = self.directory / "trees" / hashlib.sha256(f"{store.name}\0{listing}".encode()).hexdigest()[:32]
        if (folder / _DONE).is_file():
            _touch(folder)
            return folder
        tmp = folder.parent / f".incoming-{uuid.uuid4().hex}"
        try:
            for o in objects:
                store.get_file(o.key, tmp / o.key[len(prefix) + 1:])
            (tmp / _DONE).touch()
            try:
                os.rename(tmp, folder)
            except OSError:  # another process cached the same version first
                if not (folder / _DONE).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.evict(keep=folder)
        return folder

    def evict(self, keep: Path) -> None:
        """Remove the least recently used entries until the cache fits its budget (never `keep`)."""
        entries = []
        for area in ("files", "trees"):
            base = self.directory / area
            if base.is_dir():
                entries += [p for p in base.iterdir() if not p.name.startswith(".incoming-")]
        sized = []
        for path in entries:
            try:
                sized.append((path.stat().st_mtime, _size(path), path))
            except FileNotFoundError:  # another process evicted it meanwhile
                continue
        total = sum(size for _, size, _ in sized)
        for _, size, path in sorted(sized):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            total -= size
            log.info("storage cache: evicted %s (%d bytes)", path.name, size)


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*"))
