"""Starting a throwaway peftlab (server, or server + workers) for a benchmark."""
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def peftlab(data_dir: Path, command: str = "up", extra_env: dict | None = None, token: str | None = None):
    """Yield (base url, process, auth headers) of `peftlab up` (server + 1 worker) or `peftlab serve`
    on data_dir, with an admin account 'bench' whose API token is in the headers. With `token`, the
    database is one an earlier peftlab() set up: the processes start again on it (a restart)."""
    port = free_port()
    env = {**os.environ, "PEFTLAB_DATA_DIR": str(data_dir), "PEFTLAB_PORT": str(port), "HF_HUB_OFFLINE": "1",
           **(extra_env or {})}
    cli = [sys.executable, "-m", "app.cli"]
    if token is None:
        subprocess.run([*cli, "db", "upgrade"], env=env, cwd=ROOT, check=True, capture_output=True)
        subprocess.run([*cli, "users", "create", "--admin", "--username", "bench", "--password-stdin"], env=env,
                       cwd=ROOT, check=True, capture_output=True, input=b"bench-password-123\n")
        token = subprocess.run([*cli, "token", "create", "--user", "bench"], env=env, cwd=ROOT, check=True,
                               capture_output=True).stdout.decode().strip()
    log = open(data_dir.parent / f"{command}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", command], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                break
            try:
                httpx.get(f"{url}/openapi.json", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            proc.poll()
        if proc.returncode is not None:
            log.flush()
            tail = (data_dir.parent / f"{command}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"peftlab {command} exited with {proc.returncode}:\n{tail}")
        yield url, proc, {"Authorization": f"Bearer {token}"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_to_end(api: httpx.Client, body: dict) -> tuple[dict, float]:
    """POST a run, wait until it ends; (the final run, seconds from submit to done)."""
    start = time.time()
    res = api.post("/api/runs", json=body)
    if res.status_code != 201:
        raise SystemExit(f"{body.get('name') or 'the run'} was refused: {res.text}")
    run = res.json()
    while run["status"] in ("queued", "running"):
        time.sleep(2)
        run = api.get(f"/api/runs/{run['id']}").json()
    return run, time.time() - start
