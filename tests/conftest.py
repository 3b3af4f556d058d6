"""Shared fixtures: a fresh data dir and database per test session, real worker and server processes,
and the helpers a test uses to start workers of its own on a queue of its own.

Backends: SQLite + the embedded filesystem transport by default. Set PEFTLAB_TEST_DATABASE_URL
(postgresql+psycopg://…) and PEFTLAB_TEST_BROKER_URL (redis://…) to run on PostgreSQL and Redis;
each test session then gets its own database and queue name.
"""
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests import tests.tiny_models

_SESSION_TAG = uuid.uuid4().hex[:10]


def _unavailable(message: str) -> None:
    """Skip when a backend is missing, unless CI asked for it explicitly (then it is a failure)."""
    if os.environ.get("PEFTLAB_TEST_STRICT"):
        pytest.fail(message)
    pytest.skip(message)


def _postgres_database(url: str) -> tuple[str, callable]:
    """Create a throwaway database on the server of `url`; return its URL and a dropper."""
    import sqlalchemy as sa

    name = f"peftlab_test_{_SESSION_TAG}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as e:
        _unavailable(f"PostgreSQL at {url} is not reachable: {e.orig}")

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return str(sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)), drop


def _check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as e:
        _unavailable(f"Redis at {url} is not reachable: {e}")


@pytest.fixture(scope="session")
def peftlab_env(tmp_path_factory):
    """PEFTLAB_* settings for this test session (in-process app and child processes alike), migrated."""
    data_dir = tmp_path_factory.mktemp("peftlab-data")
    env = {"PEFTLAB_DATA_DIR": str(data_dir), "PEFTLAB_TRAIN_QUEUE": f"peftlab.test.{_SESSION_TAG}",
           "PEFTLAB_PREDICT_QUEUE": f"peftlab.test.predict.{_SESSION_TAG}",
           "PEFTLAB_HEARTBEAT_SECONDS": "1", "PEFTLAB_LEASE_SECONDS": "20", "PEFTLAB_SSE_POLL_SECONDS": "0.2",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           # Tiny models: one torch thread per process. The test process and its worker share 2 cores,
           # and oversubscribed OpenMP threads made a 30-step run take 34 s instead of 2.5 s.
           "OMP_NUM_THREADS": "1",
           # Every test server drives searches often: only the one holding the search job's lease drives them, and
           # a pruner that looks every 2 s misses trials of a few seconds (tests/integration/test_search_tpe.py).
           "PEFTLAB_SEARCH_INTERVAL_SECONDS": "0.3",
           # And a test server that was stopped while it held a job's lease hands the job over within seconds
           # (at least 3 of the job's intervals), not the default 30 s.
           "PEFTLAB_JOB_LEASE_SECONDS": "3",
           # Webhook retries within seconds, not minutes (tests/integration/test_webhooks.py).
           "PEFTLAB_WEBHOOK_POLL_SECONDS": "0.3", "PEFTLAB_WEBHOOK_RETRY_SECONDS": "0.3",
           "PEFTLAB_WEBHOOK_MAX_ATTEMPTS": "3",
           # The tests' webhook receivers listen on 127.0.0.1 (tests/api/test_webhook_targets.py turns it off).
           "PEFTLAB_WEBHOOK_PRIVATE_HOSTS": "true",
           # Tests register tiny models they build under pytest's temp dir.
           "PEFTLAB_MODEL_DIRS": json.dumps([str(tmp_path_factory.getbasetemp())])}
    drop = None
    if url := os.environ.get("PEFTLAB_TEST_DATABASE_URL"):
        env["PEFTLAB_DATABASE_URL"], drop = _postgres_database(url)
    if broker := os.environ.get("PEFTLAB_TEST_BROKER_URL"):
        _check_redis(broker)
        env["PEFTLAB_BROKER_URL"] = broker
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from app.db import reset_caches
    from app.migrate import upgrade

    reset_caches()
    upgrade()
    yield env
    from app.db import get_engine

    get_engine().dispose()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_caches()
    if drop:
        drop()


@pytest.fixture(scope="session")
def settings(peftlab_env):
    from app.config import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def app(peftlab_env):
    from app.main import create_app

    return create_app()


@dataclass
class Account:
    username: str
    user_id: int
    token: str

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}


def make_account(username: str, *, admin: bool = False) -> Account:
    """A user (created once per session) with a fresh API token."""
    from app.auth import service
    from app.db import session_scope

    with session_scope() as session:
        user = service.get_user_by_name(session, username=username)
        if user is None:
            user = service.create_user(session, username=username, password="correct horse battery", is_admin=admin)
        token, _ = service.create_token(session, user=user, name="tests")
        return Account(username=username, user_id=user.id, token=token)


@pytest.fixture(scope="session")
def admin_account(peftlab_env) -> Account:
    return make_account("admin", admin=True)


@pytest.fixture
def client(app, admin_account):
    """A TestClient signed in as the admin (Bearer token)."""
    from fastapi.testclient import TestClient

    with TestClient(app, headers=admin_account.headers) as c:
        yield c
    app.dependency_overrides.clear()


@pytest.fixture
def client_as(app, admin_account):
    """client_as("alice") → a TestClient signed in as that (non-admin) user; client_as(None) → anonymous."""
    from fastapi.testclient import TestClient

    opened = []

    def open_client(username: str | None, admin: bool = False):
        headers = make_account(username, admin=admin).headers if username else {}
        c = TestClient(app, headers=headers)
        c.__enter__()
        opened.append(c)
        return c

    yield open_client
    for c in opened:
        c.__exit__(None, None, None)


@pytest.fixture(scope="session")
def tiny_bert_source(tmp_path_factory) -> str:
    from tests.tiny_models import make_tiny_bert

    path = tmp_path_factory.mktemp("tiny-bert")
    make_tiny_bert(path)
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args: list[str], log: Path, extra_env: dict | None = None) -> subprocess.Popen:
    out = open(log, "wb")
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env={**os.environ, **(extra_env or {})},
                            stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_worker(args: list[str], log: Path, *, omp_threads: int | None = None) -> subprocess.Popen:
    """A real `peftlab worker --loglevel INFO <args>` process (INFO: wait_worker_ready reads its
    " ready." line) logging to `log`, also at proc.log_path for the tests to read.

    omp_threads: OMP_NUM_THREADS (torch threads per process) for this worker alone; None: the environment's."""
    proc = _spawn(["worker", "--loglevel", "INFO", *args], log,
                  None if omp_threads is None else {"OMP_NUM_THREADS": str(omp_threads)})
    proc.log_path = log
    return proc


def wait_worker_ready(proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until the worker consumes its queues (Celery logs "<name> ready.", torch imported by then);
    fails with its log if it exits first or takes longer than `timeout` seconds."""
    deadline = time.time() + timeout
    while " ready." not in (text := proc.log_path.read_text(errors="replace")):
        if proc.poll() is not None or time.time() > deadline:
            state = f"exited with {proc.returncode}" if proc.returncode is not None else f"not ready after {timeout}s"
            raise AssertionError(f"the worker did not start ({state}):\n{text[-4000:]}")
        time.sleep(0.3)


@contextmanager
def private_train_queue(suffix: str):
    """Within the block, runs go to the session's train queue + `.suffix`: a queue that only workers
    started inside the block consume (they read the name from the environment when they start), so the
    session's worker never takes them. get_settings' cache is cleared on the way in and out."""
    from app.config import get_settings

    saved = os.environ["PEFTLAB_TRAIN_QUEUE"]
    os.environ["PEFTLAB_TRAIN_QUEUE"] = f"{saved}.{suffix}"
    get_settings.cache_clear()
    try:
        yield
    finally:
        os.environ["PEFTLAB_TRAIN_QUEUE"] = saved
        get_settings.cache_clear()


@pytest.fixture(scope="session")
def worker_process(peftlab_env, tmp_path_factory):
    """One real Celery worker process (`peftlab worker`) for the whole session."""
    proc = start_worker([], tmp_path_factory.mktemp("logs") / "worker.log")
    wait_worker_ready(proc)
    yield proc
    _stop(proc)
    print(f"\n--- worker log tail ---\n{proc.log_path.read_text(errors='replace')[-3000:]}")


@dataclass
class LiveStack:
    url: str
    worker: subprocess.Popen
    server: subprocess.Popen
    headers: dict  # the admin's Bearer token, for httpx
    cookies: list  # the admin's browser session, for Playwright's context.add_cookies


def browser_session_cookie(username: str, url: str) -> list[dict]:
    from app.auth import service
    from app.auth.deps import SESSION_COOKIE
    from app.db import session_scope

    with session_scope() as session:
        cookie, _ = service.start_session(session, user=service.get_user_by_name(session, username=username))
    return [{"name": SESSION_COOKIE, "value": cookie, "url": url, "httpOnly": True, "sameSite": "Lax"}]


@pytest.fixture(scope="session")
def live_stack(peftlab_env, worker_process, admin_account, tmp_path_factory) -> LiveStack:
    """A real server process (`peftlab serve`) beside the real worker: what a browser talks to."""
    proc, url = start_server(tmp_path_factory.mktemp("logs") / "server.log")
    yield LiveStack(url=url, worker=worker_process, server=proc, headers=admin_account.headers,
                    cookies=browser_session_cookie(admin_account.username, url))
    _stop(proc)


def wait_for_status(get_run, statuses: tuple[str, ...], timeout: float = 180.0) -> dict:
    """Poll a run (get_run() → dict) until its status is one of `statuses`."""
    deadline = time.time() + timeout
    run = get_run()
    while run["status"] not in statuses:
        if time.time() > deadline:
            raise AssertionError(f"run stayed {run['status']} for {timeout}s: {run}")
        time.sleep(0.5)
        run = get_run()
    return run


def search_finished(api, experiment_id: int, timeout: float) -> dict:
    """Poll a search experiment (GET /api/experiments/{id}) until its search has finished; return it."""
    deadline = time.time() + timeout
    while not (x := api.get(f"/api/experiments/{experiment_id}").json())["search"]["finished"]:
        assert time.time() < deadline, f"the search did not finish: {x['search']}"
        time.sleep(0.5)
    return x


def start_server(log: Path, extra_env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """A real `peftlab serve` process on a free port (no worker); returns it and its URL once it answers."""
    port = _free_port()
    proc = _spawn(["serve", "--port", str(port)], log, extra_env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    _stop(proc)
    pytest.fail(f"the server did not come up:\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def api_server(peftlab_env, tmp_path_factory):
    """A real server process without workers (streams, sign-in over real sockets). Its database
    connections are named peftlab-api-server on PostgreSQL (pg_stat_activity.application_name)."""
    proc, url = start_server(tmp_path_factory.mktemp("logs") / "api-server.log", {"PGAPPNAME": "peftlab-api-server"})
    yield url
    _stop(proc)
