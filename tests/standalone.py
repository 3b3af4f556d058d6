"""A peftlab of its own for one test: its own settings (data dir, database), admin token, server and
worker processes, started through the real command line. For tests that break the database or fill
the disk, so that the session's shared stack stays whole."""
import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import ROOT, _free_port, _stop

PASSWORD = "correct horse battery"


def settings_env(**settings: str) -> dict:
    """This process's environment without the session's PEFTLAB_* settings, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEFTLAB_")}
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **settings})
    return env


def cli(env: dict, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"peftlab {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass
class Stack:
    env: dict
    logs: Path
    url: str = ""
    headers: dict = field(default_factory=dict)
    procs: list = field(default_factory=list)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=60)

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.logs.glob("*.log")))

    def stop(self) -> None:
        for proc in self.procs:
            _stop(proc)
        self.procs.clear()


def start(logs: Path, *, worker: bool = False, **settings: str) -> Stack:
    """Migrate, create an admin and a token, start `peftlab serve` (and `peftlab worker`)."""
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(env=settings_env(**settings), logs=logs)
    cli(stack.env, "db", "upgrade")
    cli(stack.env, "users", "create", "--username", "admin", "--admin", "--password-stdin", stdin=PASSWORD + "\n")
    stack.headers = {"Authorization": f"Bearer {cli(stack.env, 'token', 'create').strip().splitlines()[-1]}"}
    port = _free_port()
    stack.url = f"http://127.0.0.1:{port}"
    stack.procs.append(_spawn(stack, "server", "serve", "--port", str(port)))
    if worker:
        stack.procs.append(_spawn(stack, "worker", "worker", "--loglevel", "INFO"))
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{stack.url}/openapi.json", timeout=2).status_code == 200:
                return stack
        except httpx.HTTPError:
            time.sleep(0.3)
    stack.stop()
    raise AssertionError(f"the server did not come up:\n{stack.log_tail()}")


def _spawn(stack: Stack, name: str, *args: str) -> subprocess.Popen:
    out = open(stack.logs / f"{name}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=stack.env, stdout=out,
                            stderr=subprocess.STDOUT)


def mount_small_disk(path: Path, size: str) -> bool:
    """A tmpfs of `size` at `path` (needs root); False where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_disk(path: Path, leave: int = 0) -> Path:
    """Write a file under `path` until the disk holds at most `leave` free bytes; return the file."""
    filler = path / "filler.bin"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while os.statvfs(path).f_bavail * os.statvfs(path).f_frsize > leave + chunk:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    return filler


@contextmanager
def postgres_database(server_url: str):
    """A throwaway database on the PostgreSQL server of `server_url`: yields (its URL, an admin engine
    on the server). Raises sqlalchemy's OperationalError when the server cannot be reached."""
    import sqlalchemy as sa

    url = sa.engine.make_url(server_url)
    name = f"peftlab_own_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except BaseException:
        admin.dispose()
        raise
    try:
        yield url.set(database=name).render_as_string(hide_password=False), admin, name
    finally:
        with admin.connect() as conn:
            for db in (name, f"{name}_away"):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()
