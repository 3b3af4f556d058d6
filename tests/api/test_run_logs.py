"""The run's log tail: lines captured by the worker's handler (workers/training/log_capture.py), written on
the metric reporter's flushes, read back with GET /api/runs/{id}/logs?after=SEQ."""
import logging

import pytest

from app.datasets.models import Dataset
from app.db import session_scope
from app.logs.service import MAX_LINE_CHARS, MAX_LINES
from app.runs import lifecycle
from app.runs.models import Run
from workers.training.log_capture import RunLogCapture
from workers.training.reporting import LeaseKeeper, LeaseLost, SqlReporter

WORKER = "tests:1"


@pytest.fixture
def run_id(client):
    """A queued run of the admin's (never sent to the broker)."""
    csv = "text,label\n" + "".join(f"good {i},pos\nbad {i},neg\n" for i in range(5))
    ds = client.post("/api/datasets", files={"file": ("logs.csv", csv.encode())}).json()
    with session_scope() as s:
        project = s.get(Dataset, ds["id"]).project_id
        run = Run(name="log tail", status="queued", config={}, summary={}, dataset_id=ds["id"],
                  base_model="minilm-l6", method="lora", task="classification", project_id=project)
        s.add(run)
        s.flush()
        made = run.id
    yield made
    with session_scope() as s:
        s.delete(s.get(Run, made))


def _lease(run_id: int):
    """The run taken by WORKER, as a worker's claim takes it."""
    with session_scope() as s:
        return lifecycle.take(s, run_id, WORKER, 30)


@pytest.fixture
def training_log():
    logger = logging.getLogger("workers.training.test_tail")
    logger.setLevel(logging.INFO)  # as a worker started with --loglevel INFO has it
    yield logger
    logger.setLevel(logging.NOTSET)


def test_lines_reach_the_api_through_the_reporters_flush(client, run_id, training_log):
    capture = RunLogCapture(run_id).start()
    lease = _lease(run_id)
    reporter = SqlReporter(lease, LeaseKeeper(lease, 30, 1))  # the keeper not started: no heartbeat needed here
    reporter.on_flush.append(capture.write)
    try:
        training_log.info("step %d: eval accuracy %.2f", 4, 0.75)
        training_log.debug("not kept: below INFO")
        training_log.warning("a warning")
        reporter.report("train/loss", 1, 0.5)
        reporter.flush()
        body = client.get(f"/api/runs/{run_id}/logs").json()
        assert [(l["seq"], l["level"], l["message"]) for l in body["lines"]] == [
            (1, "INFO", "workers.training.test_tail: step 4: eval accuracy 0.75"),
            (2, "WARNING", "workers.training.test_tail: a warning")]
        assert body["last_seq"] == 2
        training_log.error("after the flush")
    finally:
        capture.stop()  # stores what is left, and stops listening
    training_log.info("after the run: not captured")
    body = client.get(f"/api/runs/{run_id}/logs", params={"after": 2}).json()
    assert [(l["seq"], l["level"], l["message"]) for l in body["lines"]] == [
        (3, "ERROR", "workers.training.test_tail: after the flush")]
    assert client.get(f"/api/runs/{run_id}/logs", params={"after": 3}).json() == {"lines": [], "last_seq": 3,
                                                                                 "max_lines": MAX_LINES}
    assert client.get(f"/api/runs/{run_id}/metrics").json()["series"]["train/loss"] == [[1, 0.5]]


def test_a_stale_attempt_writes_no_lines(client, run_id, training_log):
    """Once the run was given away (another attempt holds it), the old attempt's lines are dropped like its points."""
    capture = RunLogCapture(run_id).start()
    lease = _lease(run_id)
    reporter = SqlReporter(lease, LeaseKeeper(lease, 30, 1))
    reporter.on_flush.append(capture.write)
    try:
        training_log.info("written while the lease holds")
        reporter.flush()
        with session_scope() as s:  # the reaper gives the run to a second attempt
            s.get(Run, run_id).attempts += 1
        training_log.info("from the stale attempt")
        reporter.report("train/loss", 2, 0.4)
        with pytest.raises(LeaseLost):
            reporter.flush()
    finally:
        capture.stop(store_rest=not reporter.keeper.lost.is_set())
    lines = client.get(f"/api/runs/{run_id}/logs").json()["lines"]
    assert [l["message"].split(": ")[-1] for l in lines] == ["written while the lease holds"]


def test_a_second_attempt_continues_the_numbering(client, run_id, training_log):
    for text in ("attempt one", "attempt two"):
        capture = RunLogCapture(run_id).start()
        training_log.info(text)
        capture.stop()
    lines = client.get(f"/api/runs/{run_id}/logs").json()["lines"]
    assert [(l["seq"], l["message"].split(": ")[-1]) for l in lines] == [(1, "attempt one"), (2, "attempt two")]


def test_lines_are_bounded_in_number_and_length(client, run_id, training_log):
    capture = RunLogCapture(run_id).start()
    training_log.info("x" * (MAX_LINE_CHARS + 500))
    for i in range(MAX_LINES + 50):
        training_log.info("line %d", i)
    capture.stop()
    first = client.get(f"/api/runs/{run_id}/logs", params={"limit": 1}).json()["lines"][0]
    assert len(first["message"]) == MAX_LINE_CHARS and first["message"].endswith("…")
    tail = client.get(f"/api/runs/{run_id}/logs", params={"after": MAX_LINES - 2}).json()["lines"]
    assert [l["seq"] for l in tail] == [MAX_LINES - 1, MAX_LINES]
    assert tail[-1]["level"] == "WARNING" and f"capped at {MAX_LINES} lines" in tail[-1]["message"]


def test_bad_cursors_and_other_users(client, client_as, run_id):
    assert client.get(f"/api/runs/{run_id}/logs", params={"after": -1}).status_code == 422
    assert client.get(f"/api/runs/{run_id}/logs", params={"after": "x"}).status_code == 422
    assert client.get(f"/api/runs/{run_id}/logs", params={"limit": 0}).status_code == 422
    assert client.get("/api/runs/98765/logs").status_code == 404
    assert client_as("bob-logs").get(f"/api/runs/{run_id}/logs").status_code == 404
