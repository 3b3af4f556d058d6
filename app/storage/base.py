"""The storage interface: bytes under keys, streamed both ways.

Two implementations: a local directory (the default, app/storage/local.py) and any S3-compatible object
store (app/storage/s3.py). Keys are relative, "/"-separated paths peftlab chooses ("runs/7/adapter/…",
"<sha>-<random>.csv"), never user input; `check_key` refuses anything that could leave the store's root.
"""
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024  # bytes per read when streaming


class MissingObject(FileNotFoundError):
    """No object under that key (a FileNotFoundError, so callers that handled a missing file still do)."""


class StorageUnavailable(RuntimeError):
    """The object store cannot be reached or refused the request (not a missing key): the server answers 503."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # changes whenever the object's content does (a local cache keys on it)


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts[:-1]) \
            or parts[-1] in (".", ".."):
        raise ValueError(f"not a storage key: {key!r}")
    return key


class ObjectStore(ABC):
    """Objects under keys. `list` and `delete_prefix` take a plain string prefix: end it with "/" to mean
    "everything in this folder" (runs/1/ does not match runs/10/…)."""

    #: What identifies this store's objects across hosts (a local cache keeps copies per store).
    name: str

    @abstractmethod
    def put(self, key: str, stream: BinaryIO) -> None:
        """Store what `stream` yields under `key`, read in chunks (never whole in memory); replaces any object there."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Store a local file under `key` (streamed)."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A streaming reader of the object (close it); MissingObject if there is none."""

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> None:
        """Copy the object to a local file (written under a temporary name, then renamed into place)."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """The object's size and etag; MissingObject if there is none."""

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix`, sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; a missing one is no error."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under `prefix`; how many went."""

    @abstractmethod
    def presign(self, key: str, *, expires_s: int, filename: str | None = None) -> str | None:
        """A URL anyone holding it may GET the object from for `expires_s` seconds (saved as `filename`),
        or None where the store has no such URLs (the local directory: the server streams it instead)."""

    def local_path(self, key: str) -> Path | None:
        """Where the object lives on this machine's disk when the store is a local directory (callers then
        work in place, as peftlab always did); None for a remote store."""
        return None

    def iter_bytes(self, key: str, chunk: int = CHUNK) -> Iterator[bytes]:
        """The object as chunks (for a streamed HTTP response); MissingObject before the first one."""
        reader = self.open(key)

        def chunks() -> Iterator[bytes]:
            try:
                while data := reader.read(chunk):
                    yield data
            finally:
                reader.close()

        return chunks()
