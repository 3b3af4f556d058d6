"""A worker's writes are fenced by its lease (run, worker, attempt), and a cancel never loses to a success.

Straight against the database, with real concurrent sessions: what a worker paused past its lease
(then resumed) can still write, and how a cancel and a worker's final write serialise.
"""
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.artifacts.models import Artifact
from app.artifacts.service import record_artifact, run_artifact_dir
from app.db import session_scope, utcnow
from app.metrics.service import record_points, series
from app.runs import lifecycle
from app.runs.models import Run
from workers.training.reporting import LeaseKeeper, LeaseLost, SqlReporter


@pytest.fixture
def run_id(client):
    csv = "t,l\n" + "a,1\nb,2\n" * 5
    ds = client.post("/api/datasets", files={"file": ("fence.csv", csv.encode())}).json()
    with session_scope() as s:
        run = Run(name="fencing", config={}, summary={}, dataset_id=ds["id"], base_model="minilm-l6",
                  method="lora", task="classification")
        s.add(run)
        s.flush()
        rid = run.id
    yield rid
    with session_scope() as s:  # whatever state a test left it in, so that it can be deleted
        s.execute(update(Run).where(Run.id == rid).values(status="failed"))
    client.delete(f"/api/runs/{rid}")


def _expire(run_id: int) -> None:
    with session_scope() as s:
        s.execute(update(Run).where(Run.id == run_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def _run(run_id: int) -> Run:
    with session_scope() as s:
        return s.get(Run, run_id)


def _artifacts(run_id: int) -> list[str]:
    with session_scope() as s:
        return list(s.scalars(select(Artifact.kind).where(Artifact.run_id == run_id)))


def _adapter_writer(settings, run_id: int):
    path = run_artifact_dir(settings, run_id, "adapter")
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    return lambda session: record_artifact(session, run_id, "adapter", path, commit=False)


def test_a_stale_attempt_can_write_nothing_even_under_the_same_worker_name(run_id, settings):
    with session_scope() as s:
        first = lifecycle.take(s, run_id, "host:1", 30)
    assert first is not None and first.attempt == 1
    keeper = LeaseKeeper(first, 30, 1)  # not started: the test plays the heartbeat
    reporter = SqlReporter(first, keeper)
    reporter.report("train/loss", 1, 2.0)
    reporter.progress(0.1)
    reporter.flush()
    _expire(run_id)
    with session_scope() as s:
        assert lifecycle.recover_expired(s, max_attempts=3) == [run_id]
        # The same process claims it again (one worker, one queue): same worker name, attempt 2. With
        # no checkpoint to resume from it starts over: attempt 1's points go.
        second = lifecycle.take(s, run_id, "host:1", 30)
        assert lifecycle.start_attempt(s, second, from_step=0)
    assert second.attempt == 2 and second.worker == first.worker

    # Attempt 1 wakes up with points in its buffer: none of them, nor its progress, is written.
    reporter.report("train/loss", 2, 1.5)
    reporter.report("eval/accuracy", 2, 0.75)
    reporter.progress(0.9)
    with pytest.raises(LeaseLost):
        reporter.flush()
    assert keeper.lost.is_set() and reporter.should_stop()
    with pytest.raises(LeaseLost):  # nor does it empty an output directory its successor writes to
        reporter.check_lease()
    with pytest.raises(LeaseLost):  # the database says so too, to a reporter that had not noticed yet
        SqlReporter(first, LeaseKeeper(first, 30, 1)).check_lease()
    assert SqlReporter(second, LeaseKeeper(second, 30, 1)).check_lease() is None
    with session_scope() as s:
        assert lifecycle.heartbeat(s, run_id, first.worker, 30, attempt=first.attempt) is None
        assert lifecycle.set_progress(s, run_id, first.worker, 0.95, attempt=first.attempt) is False
        assert lifecycle.save_result(s, first, {"stale": True}, _adapter_writer(settings, run_id)) is None
        assert lifecycle.finish(s, run_id, first.worker, "failed", attempt=first.attempt) is False
        assert series(s, run_id, None) == {}
    run = _run(run_id)
    assert run.status == "running" and run.progress == 0.0 and run.attempts == 2
    assert _artifacts(run_id) == []

    # Attempt 2 writes as usual.
    fresh = SqlReporter(second, LeaseKeeper(second, 30, 1))
    fresh.report("train/loss", 2, 1.25)
    fresh.progress(0.5)
    fresh.flush()
    with session_scope() as s:
        assert series(s, run_id, None) == {"train/loss": [(2, 1.25)]}
        assert lifecycle.save_result(s, second, {"steps": 2}, _adapter_writer(settings, run_id)) == "succeeded"
    run = _run(run_id)
    assert run.status == "succeeded" and run.summary == {"steps": 2} and _artifacts(run_id) == ["adapter"]


def test_the_reaper_waits_for_a_write_in_flight_and_then_clears_it(run_id):
    """A worker's flush holds the run until it commits: the reaper's recovery comes after it, whole."""
    with session_scope() as s:
        lease = lifecycle.take(s, run_id, "host:2", 30)
    _expire(run_id)
    recovered: list = []
    with session_scope() as writer:
        assert lifecycle.hold(writer, lease) is False  # held, no cancel; the transaction stays open
        reaper = threading.Thread(target=lambda: recovered.append(_recover()))
        reaper.start()
        time.sleep(1.0)
        assert reaper.is_alive(), "the reaper went past a run held by a write in flight"
        record_points(writer, run_id, [("train/loss", 1, 3.0)])  # commits: the reaper goes on
    reaper.join(timeout=30)
    assert recovered == [[run_id]]
    with session_scope() as s:
        # Written while the lease held: they stay until the next attempt starts from its checkpoint.
        assert series(s, run_id, None) == {"train/loss": [(1, 3.0)]}
        assert lifecycle.hold(s, lease) is None
        assert lifecycle.start_attempt(s, lease, from_step=0) is False  # the old lease can change nothing
        assert lifecycle.start_attempt(s, lifecycle.take(s, run_id, "host:3", 30), from_step=0)
        assert series(s, run_id, None) == {}  # no checkpoint: the new attempt starts over


def _recover() -> list[int]:
    with session_scope() as s:
        return lifecycle.recover_expired(s, max_attempts=3)


def test_a_cancel_before_the_final_write_wins(run_id, client, settings):
    with session_scope() as s:
        lease = lifecycle.take(s, run_id, "host:3", 30)
    res = client.post(f"/api/runs/{run_id}/cancel")
    assert res.status_code == 200 and res.json()["status"] == "running" and res.json()["cancel_requested"]
    with session_scope() as s:
        assert lifecycle.save_result(s, lease, {"steps": 10}, _adapter_writer(settings, run_id)) == "cancelled"
    run = _run(run_id)
    assert run.status == "cancelled" and run.summary == {} and _artifacts(run_id) == []


def test_a_cancel_after_the_final_write_is_refused_with_the_reason(run_id, client, settings):
    with session_scope() as s:
        lease = lifecycle.take(s, run_id, "host:4", 30)
        assert lifecycle.save_result(s, lease, {"steps": 10}, _adapter_writer(settings, run_id)) == "succeeded"
    res = client.post(f"/api/runs/{run_id}/cancel")
    assert res.status_code == 409
    assert res.json()["detail"] == f"Too late: run {run_id} already finished (succeeded)."
    assert _run(run_id).status == "succeeded" and _artifacts(run_id) == ["adapter"]


def test_a_cancel_during_the_final_write_waits_for_it_and_is_refused(run_id, client, settings):
    """The race of the issue (cancel at 92%, answered 200, then `succeeded`), made deterministic: the
    worker's final transaction holds the run, the cancel waits for it and then sees a finished run."""
    with session_scope() as s:
        lease = lifecycle.take(s, run_id, "host:5", 30)
    answers: list = []

    def cancel() -> None:
        with session_scope() as s:
            answers.append(lifecycle.request_cancel(s, run_id))

    with session_scope() as worker:
        assert lifecycle.hold(worker, lease) is False
        canceller = threading.Thread(target=cancel)
        canceller.start()
        time.sleep(1.0)
        assert canceller.is_alive(), "the cancel went past the worker's final write"
        _adapter_writer(settings, run_id)(worker)
        assert lifecycle.finish(worker, run_id, lease.worker, "succeeded", summary={"steps": 10},
                                attempt=lease.attempt)
    canceller.join(timeout=30)
    assert answers == [None]  # "already ended": the API turns it into a 409
    assert client.post(f"/api/runs/{run_id}/cancel").status_code == 409
    run = _run(run_id)
    assert run.status == "succeeded" and _artifacts(run_id) == ["adapter"]
