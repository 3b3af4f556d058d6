"""SIGKILL a real worker process mid-run: the next worker resumes the run from its last checkpoint,
the curve has every step once (the points up to the checkpoint keep their original times), and the
adapter is the one an uninterrupted run with the same seed trains.

Runs on SQLite + the embedded transport by default, and on PostgreSQL + Redis when
PEFTLAB_TEST_DATABASE_URL / PEFTLAB_TEST_BROKER_URL are set.
"""
import io
import json
import os
import signal
import time
import zipfile

import pytest
import torch
from safetensors.torch import load
from sqlalchemy import func, select

from tests.conftest import _stop, private_train_queue, start_worker, wait_for_status
from tests.integration.test_end_to_end import sentiment_csv

pytestmark = pytest.mark.integration

MAX_STEPS, CHECKPOINT_EVERY, EVAL_EVERY = 400, 30, 100


@pytest.fixture(scope="module")
def slow_model_id(app, admin_account, tmp_path_factory):
    """A tiny BERT big enough that a step takes tens of milliseconds, so the kill lands mid-run."""
    from fastapi.testclient import TestClient

    from tests.tiny_models import make_tiny_bert

    path = make_tiny_bert(tmp_path_factory.mktemp("resume-bert"), hidden=64, layers=2, heads=4)
    with TestClient(app, headers=admin_account.headers) as c:
        res = c.post("/api/models", json={"name": "resume bert", "source": str(path)})
        assert res.status_code == 201, res.text
        return res.json()["id"]


@pytest.fixture(autouse=True)
def private_queue(peftlab_env):
    """This test's runs go to a queue only its own workers consume: a worker of the test session
    (another test's) must not take the run this test kills its worker under."""
    with private_train_queue("resume"):
        yield


def start_resume_worker(tmp_path, name):
    """A real `peftlab worker` process. One torch thread, like every worker here: on a shared
    machine spinning threads slow a tiny model down many times over (and both workers must match).
    Not waited for: the run is queued meanwhile, and the kill waits for its checkpoints anyway."""
    return start_worker([], tmp_path / f"{name}.log", omp_threads=1)


def checkpoint_steps(directory) -> list[int]:
    """The steps of the complete checkpoints in `directory` (a step-* folder appears by rename, whole)."""
    return sorted(int(p.name[5:]) for p in directory.glob("step-*")) if directory.is_dir() else []


def loss_points(run_id) -> list[tuple[int, float, float]]:
    """(step, value, time) of every train/loss row, straight from SQL (duplicates would show)."""
    from app.db import session_scope
    from app.metrics.models import MetricPoint

    with session_scope() as s:
        return [tuple(r) for r in s.execute(
            select(MetricPoint.step, MetricPoint.value, MetricPoint.time)
            .where(MetricPoint.run_id == run_id, MetricPoint.name == "train/loss").order_by(MetricPoint.step))]


def adapter_tensors(client, run_id) -> dict[str, torch.Tensor]:
    res = client.get(f"/api/runs/{run_id}/adapter")
    assert res.status_code == 200, res.text
    return load(zipfile.ZipFile(io.BytesIO(res.content)).read("adapter_model.safetensors"))


def test_a_killed_worker_resumes_from_its_checkpoint_exactly(client, settings, slow_model_id, tmp_path):
    from app.config import get_settings
    from app.db import session_scope
    from app.runs import service as runs_service

    ds = client.post("/api/datasets", files={"file": ("resume.csv", sentiment_csv(400, seed=5))}).json()
    body = {"dataset_id": ds["id"], "base_model": slow_model_id, "task": "classification", "eval_fraction": 0.2,
            "columns": {"text": "review", "label": "sentiment"},
            "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.1},  # dropout: the RNG must come back
            "training": {"learning_rate": 0.01, "batch_size": 32, "max_steps": MAX_STEPS, "eval_every": EVAL_EVERY,
                         "warmup_ratio": 0.1, "seed": 7, "max_length": 64, "checkpoint_every": CHECKPOINT_EVERY}}
    checkpoints = lambda rid: settings.resolved_artifact_dir / "runs" / str(rid) / "checkpoints"  # noqa: E731

    worker = start_resume_worker(tmp_path, "worker-a")
    try:
        run = client.post("/api/runs", json={**body, "name": "killed"}).json()
        # Kill once a checkpoint exists and the curve in SQL has gone some steps past it. The worker is
        # frozen (SIGSTOP) the moment that is seen, so it cannot run on to the end while the test looks:
        # a poll that loses the CPU for a second on a busy machine must not turn into "finished first".
        deadline, killed_at = time.time() + 600, None
        while time.time() < deadline and killed_at is None:
            recorded = loss_points(run["id"])  # read before the checkpoints: a newer checkpoint only waits a round
            steps = checkpoint_steps(checkpoints(run["id"]))
            assert not recorded or recorded[-1][0] < MAX_STEPS, "the run finished before the kill"
            if steps and steps[-1] >= 2 * CHECKPOINT_EVERY and recorded and recorded[-1][0] >= steps[-1] + 5:
                worker.send_signal(signal.SIGSTOP)
                assert client.get(f"/api/runs/{run['id']}").json()["status"] == "running"
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=30)
                killed_at = recorded[-1][0]
            time.sleep(0.02)
        assert killed_at is not None, f"the run never got past a checkpoint:\n{worker.log_path.read_text()[-3000:]}"
    finally:
        _stop(worker)
    assert client.get(f"/api/runs/{run['id']}").json()["status"] == "running"  # the dead worker still "holds" it
    checkpoint_step = checkpoint_steps(checkpoints(run["id"]))[-1]
    assert killed_at < MAX_STEPS, "the run finished before the kill"
    before = {step: (value, at) for step, value, at in loss_points(run["id"])}
    killed_at = max(before)  # the last step the dead worker got into SQL (its unflushed ones are lost too)
    assert killed_at >= checkpoint_step  # equal: the kill came just after a checkpoint (nothing to redo)

    # The lease (20 s in tests) runs out; the reaper puts the run back in the queue and re-sends it.
    # Another worker of the test session may take the re-queued run at once, so "recovered" is
    # queued or already in its second attempt; every point of that attempt is newer than the kill.
    restarted_at = time.time()
    deadline = restarted_at + 120
    while (now := client.get(f"/api/runs/{run['id']}").json())["status"] != "queued" and now["attempts"] < 2:
        assert time.time() < deadline, "the reaper never recovered the run"
        with session_scope() as s:
            runs_service.reap(s, get_settings())
        time.sleep(1)

    worker = start_resume_worker(tmp_path, "worker-b")
    try:
        done = wait_for_status(lambda: client.get(f"/api/runs/{run['id']}").json(), ("succeeded", "failed"), timeout=600)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 2
        assert done["summary"]["resumed_from"] == {"step": checkpoint_step, "attempt": 2}
        assert done["summary"]["steps"] == MAX_STEPS

        # The curve: every step exactly once; up to the checkpoint the first attempt's points with
        # their original times; after it, the second attempt's.
        after = loss_points(run["id"])
        assert [s for s, _, _ in after] == list(range(1, MAX_STEPS + 1))
        for step, value, at in after:
            if step <= checkpoint_step:
                assert (value, at) == before[step], step
            else:
                assert at >= restarted_at - 1, step
        series = client.get(f"/api/runs/{run['id']}/metrics", params={"max_points": 5000}).json()["series"]
        assert [s for s, _ in series["eval/accuracy"]] == list(range(EVAL_EVERY, MAX_STEPS + 1, EVAL_EVERY))

        # The same run without the kill, same seed: the same weights and the same curve.
        whole = client.post("/api/runs", json={**body, "name": "uninterrupted"}).json()
        whole_done = wait_for_status(lambda: client.get(f"/api/runs/{whole['id']}").json(), ("succeeded", "failed"),
                                     timeout=600)
        assert whole_done["status"] == "succeeded", whole_done["error"]
        assert whole_done["summary"].get("resumed_from") is None
    finally:
        _stop(worker)

    resumed, expected = adapter_tensors(client, run["id"]), adapter_tensors(client, whole["id"])
    assert resumed.keys() == expected.keys()
    max_diff = max((resumed[k] - expected[k]).abs().max().item() for k in expected)
    curve_diff = max(abs(a[1] - b[1]) for a, b in zip(after, loss_points(whole["id"])))
    figures = {"checkpoint_step": checkpoint_step, "last_recorded_step_before_kill": killed_at,
               "steps_recomputed_at_least": killed_at - checkpoint_step, "max_abs_weight_diff": max_diff,
               "max_abs_loss_diff": curve_diff}
    print("resume figures:", json.dumps(figures))
    if os.environ.get("PEFTLAB_RESUME_FIGURES"):
        with open(os.environ["PEFTLAB_RESUME_FIGURES"], "w") as f:
            json.dump(figures, f)
    assert max_diff <= 1e-6, figures
    assert curve_diff <= 1e-6, figures
    with session_scope() as s:  # the checkpoints count in the run's artifacts and go with it
        from app.artifacts.models import Artifact

        size = s.scalar(select(func.sum(Artifact.size_bytes)).where(Artifact.run_id == run["id"],
                                                                  Artifact.kind == "checkpoints"))
    assert size and size > 0
    assert client.delete(f"/api/runs/{run['id']}").status_code == 204
    assert not checkpoints(run["id"]).exists()
