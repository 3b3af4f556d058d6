"""The default store: a directory on this machine, files at their keys (the layout peftlab always had)."""
import os
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

from app.storage.base import CHUNK, MissingObject, ObjectInfo, ObjectStore, check_key

_TMP = ".incoming-store-"  # half-written files; never listed


class LocalStore(ObjectStore):
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.name = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"storage key leaves the store: {key!r}")
        return path

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def put(self, key: str, stream: BinaryIO) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{_TMP}{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                shutil.copyfileobj(stream, f, CHUNK)
            os.replace(tmp, path)  # readers see the old object or the whole new one
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as f:
            self.put(key, f)

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise MissingObject(key) from None

    def get_file(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f"{_TMP}{uuid.uuid4().hex}"
        try:
            with self.open(key) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise MissingObject(key)
        st = path.stat()
        return ObjectInfo(key=key, size=st.st_size, etag=f"{st.st_mtime_ns:x}-{st.st_size:x}")

    def list(self, prefix: str) -> list[ObjectInfo]:
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(folder) if folder else self.root
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            if path.is_file() and not path.is_symlink() and not path.name.startswith(_TMP):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(self.stat(key))
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        found = self.list(prefix)
        if prefix.endswith("/") and prefix.strip("/"):
            shutil.rmtree(self._path(prefix.rstrip("/")), ignore_errors=True)  # the folder, empty ones included
        else:
            for info in found:
                self.delete(info.key)
        return len(found)

    def presign(self, key: str, *, expires_s: int, filename: str | None = None) -> str | None:
        return None
