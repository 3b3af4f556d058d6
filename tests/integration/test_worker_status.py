"""A real worker process reports its device when it starts, and the run it trains while it trains it."""
import time

import pytest

from tests.conftest import wait_for_status
from tests.integration.test_end_to_end import sentiment_csv

pytestmark = pytest.mark.integration


def _workers(client, predicate, timeout: float = 90) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        workers = [w for w in client.get("/api/workers").json() if predicate(w)]
        if workers:
            return workers
        time.sleep(0.5)
    pytest.fail(f"no worker matched; GET /api/workers: {client.get('/api/workers').json()}")


def test_the_worker_reports_its_device_and_its_run(client, worker_process, tiny_bert_source):
    [started] = _workers(client, lambda w: w["device"]["kind"] == "cpu")[:1]
    assert started["memory_bytes"] > 0 and started["device"]["name"]

    model = client.post("/api/models", json={"name": "status tiny bert", "source": tiny_bert_source}).json()
    ds = client.post("/api/datasets", files={"file": ("s.csv", sentiment_csv(400, seed=5))}).json()
    run = client.post("/api/runs", json={
        "dataset_id": ds["id"], "base_model": model["id"], "eval_fraction": 0.25,
        "columns": {"text": "review", "label": "sentiment"}, "method": {"type": "lora", "r": 4},
        "training": {"batch_size": 4, "epochs": 3, "eval_every": 1000}}).json()
    busy = _workers(client, lambda w: w["run_id"] == run["id"])
    assert busy[0]["device"]["kind"] == "cpu"
    client.post(f"/api/runs/{run['id']}/cancel")
    wait_for_status(lambda: client.get(f"/api/runs/{run['id']}").json(), ("cancelled", "succeeded", "failed"))
    _workers(client, lambda w: w["name"] == busy[0]["name"] and w["run_id"] is None)
