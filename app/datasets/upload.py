"""Streaming a multipart upload straight to a file on disk, hashing and size-checking as it goes.

Starlette's request.form() would spool the file to a temp file first and check the size only
afterwards; here a 1 GB upload costs a few MB of memory and an oversize one stops at the limit.
"""
import fcntl
import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

MAX_FIELD_BYTES = 10_000
INCOMING_PREFIX = ".incoming-"
log = logging.getLogger("peftlab.datasets")


class UploadError(Exception):
    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@dataclass
class ReceivedUpload:
    path: Path | None = None
    filename: str | None = None
    size_bytes: int = 0
    sha256: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    # An exclusive flock on the incoming file while this process owns it: at start, a server removes
    # the incoming files nobody holds (their writer died), and leaves other processes' uploads alone.
    lock_fd: int | None = None

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def remove_stale_incoming(upload_dir: Path, max_age_s: float = 24 * 3600) -> list[str]:
    """Delete the partial uploads whose process died (server killed mid-upload); return their names.

    A live upload holds a flock on its file, so any file we can lock is abandoned. Where the file
    system refuses locks, only files older than max_age_s go.
    """
    removed = []
    for path in upload_dir.glob(f"{INCOMING_PREFIX}*"):
        try:
            fd = _lock(path)
        except BlockingIOError:
            continue  # an upload in progress, in this or another process
        except FileNotFoundError:
            continue
        except OSError:  # no locks here (some network file systems): fall back to age
            try:
                if path.stat().st_mtime < time.time() - max_age_s:
                    path.unlink(missing_ok=True)
                    removed.append(path.name)
            except FileNotFoundError:
                pass
            continue
        try:
            path.unlink(missing_ok=True)
            removed.append(path.name)
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d partial uploads left by a stopped server: %s", len(removed), ", ".join(removed[:10]))
    return removed


class _Receiver:
    def __init__(self, dest_dir: Path, limit: int, file_field: str):
        self.dest_dir, self.limit, self.file_field = dest_dir, limit, file_field
        self.result = ReceivedUpload()
        self._headers: dict[str, bytes] = {}
        self._header_field = b""
        self._header_value = b""
        self._name: str | None = None
        self._value = bytearray()
        self._file = None
        self._hash = hashlib.sha256()

    # multipart callbacks
    def on_part_begin(self) -> None:
        self._headers, self._name, self._value = {}, None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        if self._name == self.file_field:
            if self._file is not None:
                raise UploadError(400, "Send one file per upload.")
            filename = params.get(b"filename", b"").decode("utf-8", "replace")
            self.result.filename = Path(filename.replace("\\", "/")).name or None
            # Our own name: the user's file name never becomes a path.
            self.result.path = self.dest_dir / f"{INCOMING_PREFIX}{uuid.uuid4().hex}"
            self._file = open(self.result.path, "wb")
            try:
                self.result.lock_fd = _lock(self.result.path)
            except OSError as e:  # no locks on this file system: stale files then go by age only
                if isinstance(e, BlockingIOError):
                    raise

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._name == self.file_field and self._file is not None:
            self.result.size_bytes += len(chunk)
            if self.result.size_bytes > self.limit:
                raise UploadError(413, f"The file is larger than the upload limit of {self.limit:,} bytes.")
            self._hash.update(chunk)
            self._file.write(chunk)
        else:
            self._value += chunk
            if len(self._value) > MAX_FIELD_BYTES:
                raise UploadError(400, f"Form field {self._name!r} is too long.")

    def on_part_end(self) -> None:
        if self._name == self.file_field and self._file is not None:
            self._file.close()
        elif self._name:
            self.result.fields[self._name] = self._value.decode("utf-8", "replace")

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


async def receive_upload(request: Request, dest_dir: Path, limit: int, file_field: str = "file") -> ReceivedUpload:
    """Stream the request body into dest_dir; on any error the partial file is removed."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError(415, "Upload the dataset as multipart/form-data with the file in the field 'file'.")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 1024 * 1024:
        raise UploadError(413, f"The file is larger than the upload limit of {limit:,} bytes.")
    dest_dir.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(dest_dir, limit, file_field)
    callbacks = {name: getattr(receiver, name) for name in (
        "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value",
        "on_header_end", "on_headers_finished")}
    parser = MultipartParser(params[b"boundary"], callbacks)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BaseException as e:
        receiver.close()
        if receiver.result.path is not None:
            receiver.result.path.unlink(missing_ok=True)
        receiver.result.release()
        if isinstance(e, (UploadError, OSError)):
            raise  # an OSError is the server's own disk failing (full: 503, app/errors.py), not a bad upload
        if isinstance(e, Exception):
            raise UploadError(400, f"The upload could not be read: {e}") from None
        raise
    receiver.close()
    if receiver.result.path is None:
        receiver.result.release()
        raise UploadError(400, "No file was sent: put the dataset in the form field 'file'.")
    receiver.result.sha256 = receiver._hash.hexdigest()
    return receiver.result
