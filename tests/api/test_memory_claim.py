"""A worker only claims a run whose memory estimate fits its device (workers/device_fit.py around
app.runs.lifecycle.take_next); a run it cannot hold stays queued for a larger worker, and the
message goes back to the queue (workers.tasks.pass_on) instead of being dropped or failing the run."""
import pytest
from sqlalchemy import update

from app.config import get_settings
from app.datasets.models import Dataset
from app.db import session_scope, utcnow
from app.runs import lifecycle
from app.runs.models import Run
from app.runs.schemas import RunCreate
from workers.device_fit import DeviceFilter

from tests.api.test_memory_estimate_api import ALL_LINEAR, GIB, big_model  # noqa: F401 — the fixture

pytestmark = pytest.mark.usefixtures("big_model")

GPU_SMALL, GPU_BIG = ({"kind": "cuda", "name": "small"}, 8 * GIB), ({"kind": "cuda", "name": "big"}, 141 * GIB)


@pytest.fixture
def dataset_id(client):
    csv = "text\n" + "".join(f"good movie {i}\n" for i in range(20))
    return client.post("/api/datasets", files={"file": ("claim.csv", csv.encode())}).json()["id"]


@pytest.fixture
def queue(app, dataset_id):
    """Queue runs straight into the table (as sent to the broker); every other queued run is set aside
    meanwhile and put back after, so the test sees only its own queue."""
    with session_scope() as s:
        others = list(s.scalars(Run.__table__.select().with_only_columns(Run.id).where(Run.status == "queued")))
        s.execute(update(Run).where(Run.id.in_(others)).values(status="cancelled"))
        s.commit()
    made: list[int] = []

    def add(model: str, batch_size: int) -> int:
        task = "causal_lm"
        config = RunCreate.model_validate({
            "dataset_id": dataset_id, "base_model": model, "task": task, "columns": {"text": "text"},
            "method": {"type": "lora", "r": 16, "target_modules": ALL_LINEAR if model != "minilm-l6" else None},
            "training": {"batch_size": batch_size, "max_length": 1024, "precision": "bf16", "max_steps": 1}},
            strict=False) if model != "minilm-l6" else RunCreate.model_validate({
                "dataset_id": dataset_id, "task": "classification", "columns": {"text": "text", "label": "text"},
                "method": {"type": "lora"}, "training": {"max_steps": 1}}, strict=False)
        with session_scope() as s:
            run = Run(name=f"claim {model}", status="queued", config=config.model_dump(mode="json"), summary={},
                      dataset_id=dataset_id, base_model=config.base_model, method="lora", task=config.task,
                      project_id=s.get(Dataset, dataset_id).project_id, enqueued_at=utcnow())
            s.add(run)
            s.commit()
            made.append(run.id)
            return run.id

    yield add
    with session_scope() as s:
        s.execute(update(Run).where(Run.id.in_(made)).values(status="cancelled"))
        s.execute(update(Run).where(Run.id.in_(others)).values(status="queued"))
        s.commit()


def claim(device, memory, hint=None):
    with session_scope() as s:
        fits = DeviceFilter(s, device, memory)
        lease = lifecycle.take_next(s, "w-claim", 30, hint=hint, fits=fits)
    return lease, fits


def status(run_id: int) -> tuple[str, int]:
    with session_scope() as s:
        run = s.get(Run, run_id)
        return run.status, run.attempts


def test_a_small_worker_leaves_a_big_run_queued(queue):
    big = queue("llama-1b-shape", 32)
    lease, fits = claim(*GPU_SMALL, hint=big)
    assert lease is None and list(fits.declined) == [big]
    assert f"run {big} needs about" in fits.declined[big] and "6.2 GiB usable" in fits.declined[big]  # 90% of 8 less 1
    assert status(big) == ("queued", 0)  # not failed, not attempted
    lease, _ = claim(*GPU_BIG, hint=big)
    assert lease is not None and lease.run_id == big and status(big) == ("running", 1)


def test_a_small_worker_takes_the_first_run_that_fits_it(queue):
    big = queue("llama-1b-shape", 32)  # the head of the queue
    small = queue("minilm-l6", 32)
    lease, fits = claim(*GPU_SMALL, hint=big)
    assert lease.run_id == small and list(fits.declined) == [big]
    assert status(big) == ("queued", 0)
    lease, _ = claim(*GPU_BIG, hint=small)
    assert lease.run_id == big


def test_a_worker_that_did_not_say_its_memory_takes_the_head(queue):
    big = queue("llama-1b-shape", 32)
    lease, fits = claim({"kind": "cuda", "name": "?"}, None, hint=big)
    assert lease.run_id == big and not fits.declined


def test_the_task_passes_the_message_on_and_fails_nothing(queue, monkeypatch):
    """workers.tasks.train_run on a worker too small: the run stays queued, a new message for it is
    sent, due after a pause (so a larger worker gets it without waiting for the reaper, and no worker
    spins on it), and the task slot is not held: nothing sleeps."""
    from workers import device_report, tasks

    big = queue("llama-1b-shape", 32)
    sent, slept = [], []
    monkeypatch.setattr(device_report, "device_info", lambda: GPU_SMALL)
    monkeypatch.setattr(tasks, "enqueue", lambda session, run_id, countdown=None: sent.append((run_id, countdown)))
    monkeypatch.setattr(tasks.time, "sleep", slept.append)
    tasks.train_run.run(big)
    assert sent == [(big, get_settings().pass_on_pause_seconds)] and sent[0][1] > 0 and slept == []
    assert status(big) == ("queued", 0)


def test_a_worker_with_fewer_gpus_leaves_the_run(queue):
    """A run on 2 GPUs is not claimed by a worker that owns one (device.processes), and is by one that owns 2."""
    with session_scope() as s:
        run = s.get(Run, queue("minilm-l6", 8))
        run.config = {**run.config, "training": {**run.config["training"], "gpus": 2}}
        s.commit()
        run_id = run.id
    lease, fits = claim({"kind": "cuda", "name": "one", "processes": 1}, 80 * GIB, hint=run_id)
    assert lease is None and fits.declined[run_id] == f"run {run_id} asks for 2 GPUs, this worker has 1"
    lease, _ = claim({"kind": "cuda", "name": "two", "processes": 2}, 80 * GIB, hint=run_id)
    assert lease.run_id == run_id


def test_a_worker_leaves_a_quantised_run_it_cannot_load(queue, dataset_id):
    """A worker reporting the quantisation kinds it can load (device.quantization) does not claim the others."""
    with session_scope() as s:
        run = s.get(Run, queue("minilm-l6", 8))
        run.config = {**run.config, "training": {**run.config["training"], "quantization": "4bit"}}
        s.commit()
        run_id = run.id
    lease, fits = claim({"kind": "cpu", "name": "no bnb", "quantization": ["8bit"]}, 64 * GIB, hint=run_id)
    assert lease is None and "asks for a 4bit base" in fits.declined[run_id]
    lease, _ = claim({"kind": "cpu", "name": "bnb", "quantization": ["4bit", "8bit"]}, 64 * GIB, hint=run_id)
    assert lease.run_id == run_id
