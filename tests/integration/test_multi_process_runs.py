"""Runs on several processes (training.gpus 2) on a CPU worker started with `--cpu-processes 2`: torchrun
starts 2 gloo ranks, rank 0 reports and saves.

- DDP: the loss and gradient-norm curves match a one-process run of the same config (same global batch,
  same seed). Tolerance 1e-4 absolute: both runs see the same examples in the same order and take the
  same steps; what differs is only the order of float32 sums (each rank sums its half of the batch and
  the halves are added by the all-reduce) and each half's padding length (padded keys are masked to
  exact zeros). That is rounding at about 1e-7 a step, which 10 AdamW steps keep near 1e-6 (measured:
  equal to 6 decimals), while one step moves the loss by about 1e-2. The gradient norm is compared too
  because AdamW is blind to a wrong gradient scale (a missing ×world in the loss) but clipping and
  the reported norm are not.
- FSDP (torch FSDP2 `fully_shard` works with gloo on CPU in this torch): the same curve, its checkpoints
  gathered and written by rank 0, and an adapter to download.
- Cancel: both rank processes end.

Its own worker consumes a private queue, so the session's worker never takes these runs; the worker is
stopped at the end, and every run ends finished or cancelled.
"""
import io
import zipfile

import psutil
import pytest

from tests.conftest import _stop, private_train_queue, start_worker, wait_for_status, wait_worker_ready
from tests.integration.test_end_to_end import sentiment_csv

# How the ranks split, average and stop does not depend on the database or broker: CI runs this once, on SQLite.
pytestmark = [pytest.mark.integration, pytest.mark.backend_neutral]

STEPS = 10
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def two_process_worker(peftlab_env, tmp_path_factory):
    """A real `peftlab worker --cpu-processes 2` on a queue only it consumes (this module's runs go there),
    one torch thread per process (the machine is shared)."""
    with private_train_queue("ranks"):
        proc = start_worker(["--queues", "train", "--cpu-processes", "2"],
                            tmp_path_factory.mktemp("ranks-worker") / "worker.log", omp_threads=1)
        try:
            wait_worker_ready(proc)
            yield proc
        finally:
            _stop(proc)


@pytest.fixture(scope="module")
def setup(app, admin_account, two_process_worker, tmp_path_factory):
    """(client headers, dataset id, model id): a tiny BERT and a sentiment set."""
    from fastapi.testclient import TestClient

    from tests.tiny_models import make_tiny_bert

    path = make_tiny_bert(tmp_path_factory.mktemp("ranks-bert"))
    with TestClient(app, headers=admin_account.headers) as c:
        model = c.post("/api/models", json={"name": "ranks bert", "source": str(path)})
        assert model.status_code == 201, model.text
        ds = c.post("/api/datasets", files={"file": ("ranks.csv", sentiment_csv(120, seed=11))})
        assert ds.status_code == 201, ds.text
        return ds.json()["id"], model.json()["id"]


def body(setup, name: str, **training) -> dict:
    dataset_id, model_id = setup
    return {"name": name, "dataset_id": dataset_id, "base_model": model_id, "eval_fraction": 0.2,
            "columns": {"text": "review", "label": "sentiment"},
            # No dropout: the ranks draw their masks from one seed each, the one process from one stream.
            "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
            "training": {"learning_rate": 0.01, "batch_size": 8, "max_steps": STEPS, "eval_every": STEPS,
                         "seed": 3, "max_length": 32, **training}}


def finished(client, run_id: int) -> dict:
    run = wait_for_status(lambda: client.get(f"/api/runs/{run_id}").json(), ("succeeded", "failed", "cancelled"),
                          timeout=600)
    assert run["status"] == "succeeded", run["error"]
    return run


def series(client, run_id: int, name: str) -> list[tuple[int, float]]:
    points = client.get(f"/api/runs/{run_id}/metrics", params={"names": name, "max_points": 1000}).json()["series"]
    return [(int(s), v) for s, v in points[name]]


def assert_same_curves(client, one: int, many: int) -> float:
    worst = 0.0
    for name in ("train/loss", "train/grad_norm"):
        a, b = series(client, one, name), series(client, many, name)
        assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, STEPS + 1)), name
        diff = max(abs(x - y) for (_, x), (_, y) in zip(a, b))
        assert diff <= TOLERANCE, (name, diff, a, b)
        worst = max(worst, diff)
    return worst


def test_ddp_and_fsdp_on_two_processes_match_one_process(client, setup, two_process_worker):
    single = client.post("/api/runs", json=body(setup, "one process")).json()
    ddp = client.post("/api/runs", json=body(setup, "ddp", gpus=2)).json()
    fsdp = client.post("/api/runs", json=body(setup, "fsdp", gpus=2, distributed="fsdp", checkpoint_every=5)).json()
    runs = [single, ddp, fsdp]
    try:
        done = {r["name"]: finished(client, r["id"]) for r in runs}
    finally:
        for r in runs:  # a failure above must not leave a run queued
            client.post(f"/api/runs/{r['id']}/cancel")
    assert done["one process"]["summary"].get("processes") is None
    for name in ("ddp", "fsdp"):
        assert done[name]["summary"]["processes"] == 2 and done[name]["summary"]["distributed"] == name
        assert done[name]["summary"]["steps"] == STEPS
    print("largest curve differences:", {name: assert_same_curves(client, single["id"], done[name]["id"])
                                        for name in ("ddp", "fsdp")})
    for name in ("ddp", "fsdp"):  # rank 0 wrote a PEFT adapter
        res = client.get(f"/api/runs/{done[name]['id']}/adapter")
        assert res.status_code == 200
        assert "adapter_model.safetensors" in zipfile.ZipFile(io.BytesIO(res.content)).namelist()
    artifacts = client.get(f"/api/runs/{done['fsdp']['id']}/artifacts").json()
    assert "checkpoints" in {a["kind"] for a in artifacts}  # FSDP's shards gathered, written by rank 0


def rank_processes(worker) -> list[psutil.Process]:
    ranks = []
    for child in psutil.Process(worker.pid).children(recursive=True):
        try:
            if "workers.ranks" in " ".join(child.cmdline()) and "torch.distributed.run" not in " ".join(child.cmdline()):
                ranks.append(child)
        except psutil.NoSuchProcess:
            continue
    return ranks


def test_cancelling_a_two_process_run_stops_both_processes(client, setup, two_process_worker):
    import time

    run = client.post("/api/runs", json=body(setup, "cancelled on two", gpus=2, max_steps=100_000,
                                             checkpoint_every=0)).json()
    try:
        deadline, ranks = time.time() + 300, []
        while time.time() < deadline:  # both ranks up and training: the curve has begun
            ranks = rank_processes(two_process_worker)
            if len(ranks) == 2 and client.get(f"/api/runs/{run['id']}/metrics",
                                              params={"names": "train/loss"}).json()["series"].get("train/loss"):
                break
            time.sleep(0.5)
        assert len(ranks) == 2, two_process_worker.log_path.read_text(errors="replace")[-3000:]
    finally:
        assert client.post(f"/api/runs/{run['id']}/cancel").status_code == 200
    done = wait_for_status(lambda: client.get(f"/api/runs/{run['id']}").json(), ("cancelled", "failed", "succeeded"),
                           timeout=120)
    assert done["status"] == "cancelled", done
    gone, alive = psutil.wait_procs(ranks, timeout=60)
    assert not alive, [p.pid for p in alive]
    assert len(gone) == 2
