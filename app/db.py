"""Engine, sessions and the declarative base shared by every domain's tables."""
import asyncio
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from functools import lru_cache

import anyio

from sqlalchemy import DateTime, MetaData, create_engine, event, make_url
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.types import TypeDecorator
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from app.config import Settings, get_settings

# Named constraints so Alembic migrations are stable across SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every database (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets the server read while a worker writes; busy_timeout rides out short locks.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, settings: Settings | None = None) -> Engine:
    """The engine, with a connection pool sized by the settings. Requests hold a connection only
    while they run (live streams none between their reads), so the pool covers the threads that
    serve requests; a request that still finds it empty for db_pool_timeout seconds gets a 503."""
    settings = settings or get_settings()
    pool = {"pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout}
    if url.startswith("sqlite"):
        if make_url(url).database in (None, "", ":memory:"):
            pool = {}  # one in-memory database per connection: SQLAlchemy's own pool for it
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    settings.ensure_dirs()
    return make_engine(settings.resolved_database_url, settings)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error (workers, CLI)."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# Requests wait for a database slot in the event loop, never in a thread. A request keeps its
# connection across several thread hops (each sync dependency, then the endpoint); were there more
# such requests than connections, every thread could end up blocked waiting for one while the
# requests holding them wait for a thread: nothing moves until the pool timeout. With at most
# pool_size + max_overflow slot holders per process, whoever holds a slot finds a connection.
_gates: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()


def _gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        settings = get_settings()
        gate = _gates[loop] = asyncio.Semaphore(settings.db_pool_size + settings.db_max_overflow)
    return gate


async def _acquire() -> asyncio.Semaphore:
    gate = _gate()
    try:
        await asyncio.wait_for(gate.acquire(), get_settings().db_pool_timeout)
    except TimeoutError:
        raise PoolTimeout("no database connection came free in time") from None
    return gate


@asynccontextmanager
async def db_slot() -> AsyncIterator[None]:
    """Hold one of this process's database slots; PoolTimeout (answered 503) after db_pool_timeout."""
    gate = await _acquire()
    try:
        yield
    finally:
        gate.release()


async def get_db() -> AsyncIterator[Session]:
    """FastAPI dependency: one session per request, in a database slot until release()."""
    gate = await _acquire()
    session = get_sessionmaker()()
    session.info["release_slot"] = gate.release
    try:
        yield session
    finally:
        await release(session)


async def release(session: Session) -> None:
    """Close a request's session and give its slot back now, not when the response ends (long
    responses: live streams, waiting for a prediction). Idempotent."""
    release_slot = session.info.pop("release_slot", None)
    if release_slot is None:
        return
    try:
        await anyio.to_thread.run_sync(_close, session)
    finally:
        release_slot()


def _close(session: Session) -> None:
    try:
        session.close()
    except DBAPIError:
        # The database went away mid-request and the rollback on close failed too; the request
        # already answers 503 (app/errors.py). Drop the dead connection rather than fail again.
        session.invalidate()


def reset_caches() -> None:
    """Forget the cached settings, engine and sessionmaker (tests switch data dirs)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
    _gates.clear()
    get_settings.cache_clear()
