"""GET /api/workers: what the workers reported (device, memory, current run, last seen, refused task
messages), the worker-side report (workers/device_report.py) writing through the real database; the warning
the Workers page and a queued run's page give about workers that refuse the server's messages."""
from datetime import datetime, timedelta, timezone

import pytest

from app.db import session_scope
from app.worker_status.models import Worker
from workers import device_report


@pytest.fixture
def clean_workers(app):
    with session_scope() as s:
        s.query(Worker).delete()
        s.commit()
    yield
    with session_scope() as s:
        s.query(Worker).delete()
        s.commit()


def listed(client) -> list[dict]:
    """GET /api/workers, but for the session's real worker processes (a test session that started one
    before this module's tests has its heartbeats in the table too): the reports these tests make, by
    names of their own (host-…)."""
    return [w for w in client.get("/api/workers").json() if w["name"].startswith("host-")]


def test_a_worker_report_is_listed_with_its_device(client, clean_workers):
    assert listed(client) == []
    assert device_report.report("host-a:11")
    [worker] = listed(client)
    device, memory = device_report.device_info()
    assert worker["name"] == "host-a:11" and worker["device"] == device and worker["device"]["kind"] == "cpu"
    assert worker["memory_bytes"] == memory > 0 and worker["run_id"] is None and worker["last_seen"]


def test_the_current_run_follows_the_reports(client, clean_workers):
    csv = "text,label\n" + "".join(f"good {i},pos\nbad {i},neg\n" for i in range(5))
    ds = client.post("/api/datasets", files={"file": ("w.csv", csv.encode())}).json()
    from app.datasets.models import Dataset
    from app.runs.models import Run

    with session_scope() as s:
        run = Run(name="on a worker", status="running", config={}, summary={}, dataset_id=ds["id"],
                  base_model="minilm-l6", method="lora", task="classification",
                  project_id=s.get(Dataset, ds["id"]).project_id)
        s.add(run)
        s.commit()
        run_id = run.id
    device_report.report("host-b:12", run_id=run_id)
    device_report.report("host-b:12")  # a heartbeat leaves the run as it was
    assert [w["run_id"] for w in listed(client)] == [run_id]
    device_report.report("host-b:12", run_id=None)
    assert [w["run_id"] for w in listed(client)] == [None]


def test_the_workers_page_lists_them(client, clean_workers):
    page = client.get("/workers")
    assert page.status_code == 200 and 'id="workers-table"' in page.text and 'href="/workers"' in page.text


def test_anonymous_clients_get_401(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as anon:
        assert anon.get("/api/workers").status_code == 401


# ---- refused task messages (a worker with another PEFTLAB_SECRET_KEY) ------------------------------------------

HINT = "not signed with its PEFTLAB_SECRET_KEY — set the same PEFTLAB_SECRET_KEY on every server and worker"


@pytest.fixture
def no_refusals(monkeypatch):
    """This (test) process's refusal count starts at zero and none leaks into other tests' reports."""
    monkeypatch.setattr(device_report, "_refusals", device_report._Refusals())


def unsent_queued_run(dataset_id: int) -> int:
    """A queued run never sent to the broker and marked sent just now: no worker hears of it, and the reaper
    leaves it alone for requeue_after_seconds."""
    from app.datasets.models import Dataset
    from app.runs.models import Run

    with session_scope() as s:
        run = Run(name="waits", status="queued", config={}, summary={}, dataset_id=dataset_id, base_model="minilm-l6",
                  method="lora", task="classification", project_id=s.get(Dataset, dataset_id).project_id,
                  enqueued_at=datetime.now(timezone.utc))
        s.add(run)
        s.commit()
        return run.id


def _queued_run(client) -> int:
    csv = "text,label\n" + "".join(f"good {i},pos\nbad {i},neg\n" for i in range(5))
    return unsent_queued_run(client.post("/api/datasets", files={"file": ("k.csv", csv.encode())}).json()["id"])


def _set_worker(name: str, **values) -> None:
    with session_scope() as s:
        row = s.get(Worker, name)
        for key, value in values.items():
            setattr(row, key, value)
        s.commit()


def test_refusals_are_reported_and_warned_about_while_recent(client, clean_workers, no_refusals):
    assert device_report.report("host-c:13")
    [quiet] = listed(client)
    assert quiet["refused_messages"] == 0 and quiet["last_refused_at"] is None and quiet["warning"] is None
    run_id = _queued_run(client)
    assert HINT not in client.get(f"/runs/{run_id}").text
    assert 'id="key-refusals"' in client.get("/workers").text and HINT not in client.get("/workers").text

    device_report.note_refusal()
    device_report.note_refusal()
    assert device_report.report("host-c:13")
    [worker] = listed(client)
    assert worker["refused_messages"] == 2 and worker["last_refused_at"]
    assert worker["warning"] == f"refused 2 task messages that were {HINT}"
    for page in (client.get("/workers").text, client.get(f"/runs/{run_id}").text):
        assert f"Worker <code>host-c:13</code> refused 2 task messages that were {HINT}." in page

    # Old news: the last refusal before the window (10 minutes past requeue_after_seconds' 600 s here).
    _set_worker("host-c:13", last_refused_at=datetime.now(timezone.utc) - timedelta(minutes=16))
    [worker] = listed(client)
    assert worker["refused_messages"] == 2 and worker["warning"] is None
    assert HINT not in client.get(f"/runs/{run_id}").text and HINT not in client.get("/workers").text

    # Recent, but the worker stopped reporting (restarted with the right key, it is a new process and row).
    _set_worker("host-c:13", last_refused_at=datetime.now(timezone.utc),
                last_seen=datetime.now(timezone.utc) - timedelta(minutes=4))
    assert listed(client)[0]["warning"] is None
    assert HINT not in client.get(f"/runs/{run_id}").text

    # Only a queued run's page says it: a run that left the queue is not waiting for anyone.
    _set_worker("host-c:13", last_seen=datetime.now(timezone.utc))
    assert HINT in client.get(f"/runs/{run_id}").text
    assert client.post(f"/api/runs/{run_id}/cancel").status_code == 200
    assert HINT not in client.get(f"/runs/{run_id}").text and HINT in client.get("/workers").text


def test_the_refusal_window_and_wording():
    from app.worker_status.service import refusal_warning, refusal_window

    # The reaper re-sends a waiting run's message every requeue_after_seconds: the window outlasts that.
    assert refusal_window(600) == timedelta(minutes=15) and refusal_window(5) == timedelta(minutes=15)
    assert refusal_window(3600) == timedelta(minutes=65)
    now = datetime.now(timezone.utc)
    one = Worker(name="h:1", device={}, last_seen=now, refused_messages=1, last_refused_at=now - timedelta(minutes=9))
    assert refusal_warning(one, window=timedelta(minutes=10), now=now) == f"refused 1 task message that was {HINT}"
    assert refusal_warning(one, window=timedelta(minutes=8), now=now) is None
    naive = Worker(name="h:2", device={}, last_seen=now.replace(tzinfo=None), refused_messages=3,
                   last_refused_at=now.replace(tzinfo=None))  # as SQLite returns them
    assert refusal_warning(naive, window=timedelta(minutes=10), now=now).startswith("refused 3 task messages")
    never = Worker(name="h:3", device={}, last_seen=now, refused_messages=0, last_refused_at=None)
    assert refusal_warning(never, window=timedelta(minutes=10), now=now) is None
