"""GET /api/workers: what the workers reported (device, memory, current run, last seen), the
worker-side report (workers/device_report.py) writing through the real database."""
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


def test_a_worker_report_is_listed_with_its_device(client, clean_workers):
    assert client.get("/api/workers").json() == []
    assert device_report.report("host-a:11")
    [worker] = client.get("/api/workers").json()
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
    assert [w["run_id"] for w in client.get("/api/workers").json()] == [run_id]
    device_report.report("host-b:12", run_id=None)
    assert [w["run_id"] for w in client.get("/api/workers").json()] == [None]


def test_the_workers_page_lists_them(client, clean_workers):
    page = client.get("/workers")
    assert page.status_code == 200 and 'id="workers-table"' in page.text and 'href="/workers"' in page.text


def test_anonymous_clients_get_401(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as anon:
        assert anon.get("/api/workers").status_code == 401
