"""A peftlab deployment of its own for fault tests: database, queue, server and workers that no other
test shares, so a test can pause, kill or starve its processes (and restart its broker) freely.

Backends as the test session's (tests/conftest.py): SQLite + the embedded transport by default, a
fresh PostgreSQL database when PEFTLAB_TEST_DATABASE_URL is set, PEFTLAB_TEST_BROKER_URL's Redis (or a
broker the test passes) with queue names of its own. Short leases keep the faults quick.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.conftest import wait_worker_ready

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PrivateStack:
    env: dict
    data_dir: Path
    db_url: str
    url: str = ""
    headers: dict = field(default_factory=dict)
    server: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    proxy: "TcpProxy | None" = None  # between the processes and PostgreSQL, when asked for
    _drop_db: object = None

    def cli(self, *args: str, stdin: str | None = None) -> str:
        res = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=self.env, input=stdin,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"peftlab {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
        return res.stdout

    def spawn(self, name: str, *args: str, env: dict | None = None, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
        """`peftlab <args>`, logging to <data dir>/<name>.log. env: instead of the stack's; prefix: what runs
        it (e.g. `ip netns exec <namespace>`, which execs it: the process keeps the pid)."""
        log = self.data_dir / f"{name}.log"
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env or self.env,
                                stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        proc.log_path = log
        return proc

    def start_worker(self) -> subprocess.Popen:
        proc = self.spawn(f"worker-{len(self.workers)}", "worker", "--queues", "train", "--loglevel", "INFO")
        self.workers.append(proc)
        return proc

    def start_server(self) -> None:
        port = free_port()
        self.server = self.spawn("server", "serve", "--port", str(port))
        self.url = f"http://127.0.0.1:{port}"
        wait_until_answering(self.url, self.server)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=60)

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.db_url)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}"
                         for p in sorted(self.data_dir.glob("*.log")))

    def close(self) -> None:
        for proc in [*self.workers, self.server]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a paused one could not act on the terminate
                proc.terminate()
        for proc in [*self.workers, self.server]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.proxy:
            self.proxy.close()
        if self._drop_db:
            self._drop_db()


class TcpProxy:
    """Forwards a local port to a database server. cut() drops every connection and refuses new
    ones, as a database that went away does; restore() lets them through again."""

    def __init__(self, host: str, port: int, bind: str = "127.0.0.1"):
        self.target = (host, port)
        self.listener = socket.create_server((bind, 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._socks |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def cut(self) -> None:
        self.open.clear()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            self._drop(sock)

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def wait_until_answering(url: str, proc: subprocess.Popen | None = None, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/openapi.json", timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def _database(data_dir: Path) -> tuple[str, object]:
    url = os.environ.get("PEFTLAB_TEST_DATABASE_URL")
    if not url:
        return f"sqlite:///{data_dir / 'peftlab.sqlite'}", None
    name = f"peftlab_faults_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False), drop


def prepare_stack(data_dir: Path, model_dirs: list[str], *, broker_url: str | None = None, db_proxy: bool = False,
                  **settings: object) -> PrivateStack:
    """A fresh database, migrated, with an admin and an API token (stack.headers); no process started yet.

    db_proxy: the processes reach PostgreSQL through a `TcpProxy` the test can cut (stack.proxy).
    settings: PEFTLAB_* overrides by lower-case name (lease_seconds=4 …)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    db_url, drop = _database(data_dir)
    proxy, process_db_url = None, db_url
    if db_proxy:
        url = sa.engine.make_url(db_url)
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        process_db_url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEFTLAB_")}
    env |= {"PEFTLAB_DATA_DIR": str(data_dir), "PEFTLAB_DATABASE_URL": process_db_url,
            "PEFTLAB_TRAIN_QUEUE": f"peftlab.faults.{tag}", "PEFTLAB_PREDICT_QUEUE": f"peftlab.faults.predict.{tag}",
            "PEFTLAB_MODEL_DIRS": json.dumps(model_dirs), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(ROOT)}
    broker_url = broker_url or os.environ.get("PEFTLAB_TEST_BROKER_URL")
    if broker_url:
        env["PEFTLAB_BROKER_URL"] = broker_url
    env |= {f"PEFTLAB_{k.upper()}": str(v) for k, v in settings.items()}
    stack = PrivateStack(env=env, data_dir=data_dir, db_url=db_url, proxy=proxy, _drop_db=drop)
    try:
        stack.cli("db", "upgrade")
        stack.cli("users", "create", "--admin", "--username", "admin", "--password-stdin", stdin=PASSWORD + "\n")
        stack.headers = {"Authorization": f"Bearer {stack.cli('token', 'create').strip()}"}
    except BaseException:
        stack.close()
        raise
    return stack


def start_stack(data_dir: Path, model_dirs: list[str], *, broker_url: str | None = None, workers: int = 1,
                db_proxy: bool = False, **settings: object) -> PrivateStack:
    """prepare_stack(), then start the server and `workers` workers (arguments as there)."""
    stack = prepare_stack(data_dir, model_dirs, broker_url=broker_url, db_proxy=db_proxy, **settings)
    try:
        for _ in range(workers):  # first: a worker takes longest to start (torch)
            stack.start_worker()
        stack.start_server()
        for proc in stack.workers:  # ready (torch imported, consuming): a paused or limited worker must be idle
            wait_worker_ready(proc, timeout=120)
    except BaseException:
        print(stack.logs())
        stack.close()
        raise
    return stack


def run_points(engine: sa.Engine, run_id: int) -> list[tuple[str, int, float, float]]:
    """Every stored point of a run: (name, step, value, time)."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT name, step, value, time FROM metrics WHERE run_id = :r ORDER BY name, step"), {"r": run_id})]


def run_row(engine: sa.Engine, run_id: int) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT * FROM runs WHERE id = :r"), {"r": run_id}).mappings().one())


def run_is_unlocked(engine: sa.Engine, run_id: int) -> bool:
    """Whether no transaction holds the run (a paused worker could be stopped in the middle of one)."""
    with engine.connect() as conn:
        try:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA busy_timeout = 500")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(sa.text("SET LOCAL lock_timeout = '500ms'"))
                conn.execute(sa.text("SELECT id FROM runs WHERE id = :r FOR UPDATE"), {"r": run_id})
            conn.rollback()
            return True
        except sa.exc.OperationalError:
            conn.rollback()
            return False
