"""Faults injected into real processes: a worker paused past its lease, a worker out of memory, the
server of `peftlab up` killed, Redis restarted under queued and running runs.

Each test runs a deployment of its own (tests/integration/private_stack.py) with short leases, on
SQLite + the embedded transport by default and on PostgreSQL + Redis in CI.
"""
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.private_stack import (ROOT, free_port, run_is_unlocked, run_points, run_row, start_stack,
                                             wait_until_answering)
from tests.integration.test_end_to_end import sentiment_csv

pytestmark = pytest.mark.integration

# A lease short enough that a paused worker loses it in seconds, long enough that a busy machine's
# scheduling hiccups do not; one torch thread per process keeps a loaded 2-core machine responsive.
FAST = dict(lease_seconds=6, heartbeat_seconds=0.5, reaper_interval_seconds=0.5)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _with_one_thread():
    saved = {k: os.environ.get(k) for k in ONE_THREAD}
    os.environ.update(ONE_THREAD)
    return saved


def _restore(saved: dict) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_bert_source):
    saved = _with_one_thread()
    try:
        s = start_stack(tmp_path_factory.mktemp("faults"), [str(Path(tiny_bert_source).parent)], **FAST)
    finally:
        _restore(saved)
    with s.client() as c:
        res = c.post("/api/models", json={"name": "tiny bert faults", "source": tiny_bert_source})
        assert res.status_code == 201, res.text
        s.model_id = res.json()["id"]
        s.dataset_id = c.post("/api/datasets", files={"file": ("faults.csv", sentiment_csv(160))}).json()["id"]
    yield s
    print(s.logs())
    s.close()


def _launch(c: httpx.Client, stack, name: str, **training) -> int:
    body = {"name": name, "dataset_id": stack.dataset_id, "base_model": stack.model_id, "task": "classification",
            "eval_fraction": 0.25, "columns": {"text": "review", "label": "sentiment"},
            "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
            "training": {"learning_rate": 0.01, "batch_size": 8, "max_steps": 20, "eval_every": 10, "seed": 1,
                         **training}}
    res = c.post("/api/runs", json=body)
    assert res.status_code == 201, res.text
    return res.json()["id"]


def _stopped(pid: int) -> bool:
    """Every thread of the process is stopped: SIGSTOP is delivered asynchronously, and a thread still
    running after kill() returned could take a database lock after the lock probe saw none."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        except (OSError, IndexError):
            continue  # a thread that just ended
    return bool(states) and all(state in ("T", "t") for state in states)


def _wait(check, timeout: float, what: str, every: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (value := check()):
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _ended(c: httpx.Client, run_id: int, timeout: float = 240) -> dict:
    return _wait(lambda: (r := c.get(f"/api/runs/{run_id}").json())["status"] in ("succeeded", "failed", "cancelled")
                 and r, timeout, f"run {run_id} to end", every=0.5)


def test_a_worker_paused_past_its_lease_leaves_nothing_behind(stack):
    """SIGSTOP the training worker mid-run until the reaper re-queues the run, then SIGCONT: the old
    attempt's buffered points, its progress and its result are never written; the retry's are."""
    worker, engine = stack.workers[0], stack.engine()
    steps, every = 1200, 200  # long enough to pause mid-run: a tiny model now trains 120 steps in about a second
    with stack.client() as c:
        run_id = _launch(c, stack, "paused worker", max_steps=steps, eval_every=every)
        _wait(lambda: c.get(f"/api/runs/{run_id}").json()["progress"] >= 0.25, 180, "a quarter of the run")
        for _ in range(20):  # never pause it in the middle of a transaction: that would hold the database
            worker.send_signal(signal.SIGSTOP)
            _wait(lambda: _stopped(worker.pid), 10, "the worker to stop", every=0.01)
            if run_is_unlocked(engine, run_id):
                break
            worker.send_signal(signal.SIGCONT)
            time.sleep(0.2)
        else:
            raise AssertionError("the worker always held the run")
        try:
            # What had reached the database when it stopped; its buffer (up to a second of points) had not.
            before = {(n, s, t) for n, s, _, t in run_points(engine, run_id)}
            assert before and run_row(engine, run_id)["attempts"] == 1
            _wait(lambda: run_row(engine, run_id)["status"] == "queued", 60, "the reaper to re-queue the run")
            _wait(lambda: run_row(engine, run_id)["enqueued_at"] is not None, 30, "the run to be sent again")
        finally:
            worker.send_signal(signal.SIGCONT)
        done = _ended(c, run_id)
        assert done["status"] == "succeeded", done["error"]

    row = run_row(engine, run_id)
    assert row["attempts"] == 2
    second_start = datetime.fromisoformat(done["started_at"]).timestamp()
    points = run_points(engine, run_id)
    stale = [p for p in points if (p[0], p[1], p[3]) not in before and p[3] < second_start]
    assert stale == [], f"points of the paused attempt survived: {stale[:10]}"
    by_name: dict[str, list[int]] = {}
    for name, step, _, _ in points:
        by_name.setdefault(name, []).append(step)
    assert by_name["train/loss"] == list(range(1, steps + 1))
    assert by_name["eval/accuracy"] == list(range(every, steps + 1, every))
    log = worker.log_path.read_text(errors="replace")
    assert "lease lost" in log


def test_a_worker_out_of_memory_fails_the_run_says_what_to_lower_and_takes_the_next(stack, tmp_path):
    """A real allocation failure: the worker's address space is capped (RLIMIT_AS) a little above what
    it uses idle, and the run's batch needs far more; the next, small run trains in the same process."""
    worker = stack.workers[0]
    vm_size = psutil.Process(worker.pid).memory_info().vms
    soft, hard = resource.prlimit(worker.pid, resource.RLIMIT_AS)
    # 4096 rows of ~125 tokens in one batch: a full fine-tuning step needs over 2 GB (1024 rows: 0.57 GB).
    words = " ".join(["good", "movie"] * 60)
    rows = "review,sentiment\n" + "".join(f"{words} {i},{'pos' if i % 2 else 'neg'}\n" for i in range(5120))
    try:
        resource.prlimit(worker.pid, resource.RLIMIT_AS, (vm_size + 768 * 2**20, hard))
        with stack.client() as c:
            big = c.post("/api/datasets", files={"file": ("long.csv", rows.encode())}).json()["id"]
            body = {"name": "too big", "dataset_id": big, "base_model": stack.model_id, "eval_fraction": 0.2,
                    "columns": {"text": "review", "label": "sentiment"}, "method": {"type": "full"},
                    "training": {"batch_size": 4096, "max_length": 128, "max_steps": 2, "eval_every": 100}}
            res = c.post("/api/runs", json=body)
            assert res.status_code == 201, res.text
            too_big = res.json()["id"]
            small = _launch(c, stack, "after the out-of-memory", max_steps=6, eval_every=3)
            failed = _ended(c, too_big)
            assert failed["status"] == "failed"
            assert failed["error"].startswith("out of CPU memory: lower training.batch_size"), failed["error"]
            assert "training.max_length" in failed["error"]
            after = _ended(c, small)
            assert after["status"] == "succeeded", after["error"]
    finally:
        resource.prlimit(worker.pid, resource.RLIMIT_AS, (soft, hard))
    assert worker.poll() is None, "the worker died"


@pytest.mark.backend_neutral  # `peftlab up` on the embedded defaults, whatever the session's backends
def test_peftlab_up_brings_a_killed_server_back(tmp_path):
    """Kill the server child of a real `peftlab up`: it answers again, started afresh, and up stops cleanly."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEFTLAB_")} | ONE_THREAD
    env |= {"PEFTLAB_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    log = tmp_path / "up.log"
    up = subprocess.Popen([sys.executable, "-m", "app.cli", "up", "--port", str(port), "--workers", "0"],
                          cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(url, up, timeout=120)

        def server_child():
            found = [p for p in psutil.Process(up.pid).children() if "serve" in p.cmdline()]
            return found[0] if found else None

        first = server_child()
        assert first is not None
        first.kill()  # SIGKILL: no goodbye
        first.wait(timeout=10)
        second = _wait(lambda: (p := server_child()) is not None and p.pid != first.pid and p, 60, "a new server")
        wait_until_answering(url, up, timeout=120)
        assert up.poll() is None
        assert "the server exited with -9; restarting" in log.read_text()
        assert second.is_running()
    finally:
        up.send_signal(signal.SIGINT)
        try:
            assert up.wait(timeout=60) == 0
        finally:
            if up.poll() is None:
                up.kill()
            print(log.read_text(errors="replace")[-3000:])


def test_a_run_that_finishes_during_a_database_outage_is_saved_not_retrained(tmp_path_factory, tiny_bert_source):
    """PostgreSQL goes away (every connection dropped, new ones refused) for the end of a run and a
    few seconds more, shorter than the lease: the worker keeps its last points and the result and
    writes them when the database is back; the run is not trained a second time."""
    if not os.environ.get("PEFTLAB_TEST_DATABASE_URL"):
        pytest.skip("a database outage is cut between the processes and PostgreSQL (PEFTLAB_TEST_DATABASE_URL)")
    saved = _with_one_thread()
    try:
        db_stack = start_stack(tmp_path_factory.mktemp("db-outage"), [str(Path(tiny_bert_source).parent)],
                               db_proxy=True, lease_seconds=30, heartbeat_seconds=0.5, reaper_interval_seconds=0.5)
    finally:
        _restore(saved)
    # Long enough that the cut lands while it trains: a tiny model now trains 120 steps in about a second.
    worker, engine, steps = db_stack.workers[0], db_stack.engine(), 2000
    try:
        with db_stack.client() as c:
            db_stack.model_id = c.post("/api/models", json={"name": "tiny bert db", "source": tiny_bert_source}).json()["id"]
            db_stack.dataset_id = c.post("/api/datasets", files={"file": ("db.csv", sentiment_csv(160))}).json()["id"]
            run_id = _launch(c, db_stack, "database outage", max_steps=steps, eval_every=500)
            _wait(lambda: c.get(f"/api/runs/{run_id}").json()["progress"] >= 0.5, 180, "half the run")
            db_stack.proxy.cut()
            try:  # until the run trained to the end and its worker is retrying the final write, then a little more
                _wait(lambda: b"database unavailable" in worker.log_path.read_bytes(), 60,
                      "the worker to retry saving the result")
                time.sleep(3)
            finally:
                db_stack.proxy.restore()
            done = _ended(c, run_id)
        assert done["status"] == "succeeded", done["error"]
        assert run_row(engine, run_id)["attempts"] == 1  # saved by the attempt that trained it
        assert [s for n, s, _, _ in run_points(engine, run_id) if n == "train/loss"] == list(range(1, steps + 1))
    finally:
        print(db_stack.logs())
        db_stack.close()


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own (another port), so restarting it disturbs no one else."""
    if not os.environ.get("PEFTLAB_TEST_BROKER_URL"):
        pytest.skip("Redis restart: runs on the Redis configuration (PEFTLAB_TEST_BROKER_URL set), as CI does")
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("PEFTLAB_TEST_STRICT"):
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    port = free_port()

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        proc: subprocess.Popen | None = None

        def start(self) -> None:
            # No persistence: a restart loses every message, the harder case (the reaper re-sends them).
            self.proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", str(tmp_path)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            import redis

            client = redis.Redis(port=port)
            _wait(lambda: _pings(client), 20, "redis to start")

        def stop(self) -> None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    server = Server()
    server.start()
    yield server
    if server.proc.poll() is None:
        server.stop()


def _pings(client) -> bool:
    import redis

    try:
        return client.ping()
    except redis.exceptions.ConnectionError:
        return False


def test_restarting_redis_under_queued_and_running_runs_loses_none_and_runs_none_twice(
        private_redis, tmp_path_factory, tiny_bert_source):
    saved = _with_one_thread()
    try:
        redis_stack = start_stack(tmp_path_factory.mktemp("redis-restart"), [str(Path(tiny_bert_source).parent)],
                                  broker_url=private_redis.url, requeue_after_seconds=5, **FAST)
    finally:
        _restore(saved)
    try:
        with redis_stack.client() as c:
            res = c.post("/api/models", json={"name": "tiny bert redis", "source": tiny_bert_source})
            redis_stack.model_id = res.json()["id"]
            redis_stack.dataset_id = c.post("/api/datasets", files={"file": ("r.csv", sentiment_csv(96))}).json()["id"]
            runs = [_launch(c, redis_stack, f"redis {i}", max_steps=40 if i == 0 else 10, eval_every=10)
                    for i in range(4)]
            _wait(lambda: c.get(f"/api/runs/{runs[0]}").json()["status"] == "running", 120, "the first run to start")
            private_redis.stop()  # one run in flight, three queued (their messages are lost with it)
            # The run in flight ends while the broker is away, so its worker cannot acknowledge it then:
            # it must still consume again once the broker is back.
            _wait(lambda: c.get(f"/api/runs/{runs[0]}").json()["status"] == "succeeded", 240,
                  "the run in flight to end while Redis is down")
            private_redis.start()
            ended = [_ended(c, run_id, timeout=300) for run_id in runs]
        engine = redis_stack.engine()
        assert [r["status"] for r in ended] == ["succeeded"] * 4, [(r["status"], r["error"]) for r in ended]
        assert [run_row(engine, r)["attempts"] for r in runs] == [1, 1, 1, 1]  # none trained twice
        for run_id, steps in zip(runs, [40, 10, 10, 10]):
            assert [s for n, s, _, _ in run_points(engine, run_id) if n == "train/loss"] == list(range(1, steps + 1))
    finally:
        print(redis_stack.logs())
        redis_stack.close()
