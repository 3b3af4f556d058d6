"""training.gpus at POST /api/runs: more GPUs than any worker seen in the last hour owns is a 422 naming
the field; a worker that owns enough makes the same run acceptable. GET /api/methods says which methods
FSDP can shard."""
from datetime import datetime, timezone

import pytest

from app.db import session_scope
from app.worker_status.models import Worker

BIG = "gpu-host:4242"


@pytest.fixture
def dataset(client):
    csv = "sentence,label\n" + "".join(f"good movie {i},pos\nbad film {i},neg\n" for i in range(10))
    return client.post("/api/datasets", files={"file": ("gpus.csv", csv.encode())}).json()


@pytest.fixture
def two_gpu_worker(app):
    """A worker row as a `peftlab worker --gpus 0,1` host reports it (the session's CPU worker says 1)."""
    with session_scope() as s:
        s.merge(Worker(name=BIG, device={"kind": "cuda", "name": "H100", "quantization": ["4bit", "8bit"],
                                         "processes": 2},
                       memory_bytes=80 * 2**30, last_seen=datetime.now(timezone.utc), run_id=None))
        s.commit()
    yield
    with session_scope() as s:
        s.query(Worker).filter(Worker.name == BIG).delete()
        s.commit()


def body(dataset_id, **training):
    return {"dataset_id": dataset_id, "base_model": "minilm-l6", "columns": {"text": "sentence", "label": "label"},
            "method": {"type": "lora"}, "training": {"max_steps": 2, "batch_size": 8, **training}}


def test_more_gpus_than_any_worker_owns_is_refused(client, dataset, two_gpu_worker):
    res = client.post("/api/runs", json=body(dataset["id"], gpus=4))
    assert res.status_code == 422, res.text
    [error] = [e for e in res.json()["detail"] if e["loc"] == ["body", "training", "gpus"]]
    assert "4 GPUs is more than any worker seen in the last hour has (at most 2" in error["msg"] and BIG in error["msg"]


def test_a_worker_that_owns_enough_makes_it_acceptable(client, dataset, two_gpu_worker):
    res = client.post("/api/runs", json=body(dataset["id"], gpus=2, distributed="fsdp"))
    assert res.status_code == 201, res.text
    run = res.json()
    assert run["config"]["training"]["gpus"] == 2 and run["config"]["training"]["distributed"] == "fsdp"
    assert client.post(f"/api/runs/{run['id']}/cancel").status_code in (200, 202)  # never left queued
    assert client.delete(f"/api/runs/{run['id']}").status_code == 204


def test_config_problems_are_422s_beside_their_field(client, dataset):
    res = client.post("/api/runs", json={**body(dataset["id"], gpus=2, distributed="fsdp"),
                                         "method": {"type": "prompt"}})
    assert res.status_code == 422, res.text
    messages = {tuple(e["loc"]): e["msg"] for e in res.json()["detail"]}
    assert "cannot be sharded with fsdp" in messages[("body", "training", "distributed")]
    res = client.post("/api/runs", json=body(dataset["id"], gpus=1000))
    assert res.status_code == 422 and "gpus" in res.text


def test_methods_say_whether_fsdp_shards_them(client):
    shards = {m["name"]: m["shards"] for m in client.get("/api/methods").json()}
    assert shards["lora"] and shards["full"] and not shards["prompt"] and not shards["ptuning"]
