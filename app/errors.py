"""Answers for requests that fail for reasons other than a bad request: a 422 that can always be
written out, and 503 (with a message) while the database or the disk cannot serve, instead of a 500."""
import errno
import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

from app.storage.base import StorageUnavailable
from app.templating import render

log = logging.getLogger("peftlab")

DB_UNAVAILABLE = "The database is unavailable; try again shortly."
DB_BUSY = "The database is busy (every connection is in use); try again shortly."
STORAGE_UNAVAILABLE = "The object store is unavailable; try again shortly."
DISK_FULL = "The server is out of disk space; nothing was saved. Try again once space has been freed."
NUL_IN_TEXT = "Text must not contain the NUL character (\\u0000)."
MAX_ECHO_CHARS = 1000  # a refused 10 MB string is not sent back whole

# SQLite result codes that mean "cannot serve now" rather than "this SQL is wrong".
SQLITE_UNAVAILABLE = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY",
                      "SQLITE_PROTOCOL", "SQLITE_FULL"}
DISK_FULL_CODES = {errno.ENOSPC, errno.EDQUOT}


def json_safe(value):
    """`value` with what JSON cannot hold made printable: NaN and ±Infinity as text, bytes decoded,
    lone surrogates replaced, long text cut, anything else as its str()."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        text = value.encode("utf-8", "replace").decode("utf-8")
        return text if len(text) <= MAX_ECHO_CHARS else text[:MAX_ECHO_CHARS] + "…"
    if isinstance(value, dict):
        return {str(json_safe(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    return json_safe(str(value))


def _answer(request: Request, status: int, message: str) -> JSONResponse:
    """JSON for the API and scripts, the error page for a browser asking for a page (as main.http_error)."""
    if not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", ""):
        return render(request, "error.html", f"Error {status}", http_status=status, status_code=status, message=message)
    return JSONResponse({"detail": message}, status_code=status)


def database_problem(error: sa_exc.DBAPIError) -> str | None:
    """The message for a database error that means "not now" (down, restarting, full, locked), or None
    for one that is a bug and stays a 500."""
    orig = error.orig
    if getattr(orig, "sqlstate", None) == "53100" or getattr(orig, "sqlite_errorname", None) == "SQLITE_FULL":
        return DISK_FULL
    if error.connection_invalidated:
        return DB_UNAVAILABLE
    if isinstance(error, sa_exc.OperationalError):
        sqlite_code = getattr(orig, "sqlite_errorname", None)
        if sqlite_code is None or sqlite_code in SQLITE_UNAVAILABLE:
            return DB_UNAVAILABLE
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # FastAPI's own handler echoes the input as is, and NaN, Infinity or a lone surrogate in it
        # made the 422 itself fail (a 500).
        return JSONResponse({"detail": json_safe(exc.errors())}, status_code=422)

    @app.exception_handler(sa_exc.DBAPIError)
    async def database_error(request: Request, exc: sa_exc.DBAPIError):
        if "NUL (0x00)" in str(exc.orig):  # PostgreSQL text cannot hold it (SQLite can): the input's fault
            return _answer(request, 422, NUL_IN_TEXT)
        message = database_problem(exc)
        if message is None:
            raise exc
        log.warning("%s %s: %s (%s)", request.method, request.url.path, message, str(exc.orig).strip()[:300])
        return _answer(request, 503, message)

    @app.exception_handler(sa_exc.TimeoutError)
    async def pool_exhausted(request: Request, exc: sa_exc.TimeoutError):
        log.warning("%s %s: connection pool exhausted", request.method, request.url.path)
        return _answer(request, 503, DB_BUSY)

    @app.exception_handler(StorageUnavailable)
    async def storage_unavailable(request: Request, exc: StorageUnavailable):
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _answer(request, 503, STORAGE_UNAVAILABLE)

    @app.exception_handler(OSError)
    async def disk_error(request: Request, exc: OSError):
        if exc.errno not in DISK_FULL_CODES:
            raise exc
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _answer(request, 503, DISK_FULL)
