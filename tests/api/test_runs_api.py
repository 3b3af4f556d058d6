"""Run configs are validated field by field; queued runs can be listed, cancelled and deleted."""
import pytest

from app.db import session_scope
from app.runs import lifecycle


@pytest.fixture
def dataset(client):
    csv = "sentence,label,other\n" + "".join(f"good movie {i},pos,x\nbad film {i},neg,y\n" for i in range(10))
    return client.post("/api/datasets", files={"file": ("reviews.csv", csv.encode())}).json()


@pytest.fixture
def created(client):
    """Runs made here; deleted afterwards so a worker started later in the session never sees them."""
    ids: list[int] = []
    yield ids
    for run_id in ids:
        client.post(f"/api/runs/{run_id}/cancel")
        client.delete(f"/api/runs/{run_id}")


def config(dataset_id, **over):
    body = {"dataset_id": dataset_id, "base_model": "minilm-l6", "task": "classification",
            "columns": {"text": "sentence", "label": "label"}, "method": {"type": "lora"},
            "training": {"max_steps": 5, "batch_size": 4}}
    body.update(over)
    return body


def _locs(res) -> list[list]:
    assert res.status_code == 422, res.text
    return [e["loc"] for e in res.json()["detail"]]


def test_create_applies_documented_defaults(client, dataset, created):
    res = client.post("/api/runs", json=config(dataset["id"], name="my lora"))
    assert res.status_code == 201, res.text
    run = res.json()
    created.append(run["id"])
    assert run["status"] == "queued" and run["name"] == "my lora" and run["progress"] == 0
    assert run["config"]["method"] == {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.1, "target_modules": None,
                                       "use_dora": False, "use_rslora": False, "init": None}
    # No learning rate given: LoRA's preset (the method registry's).
    assert run["config"]["training"]["learning_rate"] == 2e-3 and run["config"]["eval_fraction"] == 0.1
    assert run["summary"]["eval"] == {"accuracy": None, "f1": None, "loss": None, "perplexity": None}
    assert client.get(f"/api/runs/{run['id']}").json()["id"] == run["id"]


def test_default_name_says_method_and_dataset(client, dataset, created):
    run = client.post("/api/runs", json=config(dataset["id"])).json()
    created.append(run["id"])
    assert run["name"] == "lora on reviews.csv"


@pytest.mark.parametrize("override, loc", [
    ({"training": {"batch_size": 0}}, ["body", "training", "batch_size"]),
    ({"training": {"learning_rate": -1}}, ["body", "training", "learning_rate"]),
    ({"method": {"type": "lora", "r": 0}}, ["body", "method", "lora", "r"]),
    ({"method": {"type": "lora", "dropout": 1.5}}, ["body", "method", "lora", "dropout"]),
    ({"eval_fraction": 1.0}, ["body", "eval_fraction"]),
    ({"training": {"unknown_knob": 1}}, ["body", "training", "unknown_knob"]),
])
def test_invalid_fields_are_refused_by_name(client, dataset, override, loc):
    before = len(client.get("/api/runs").json())
    assert loc in _locs(client.post("/api/runs", json=config(dataset["id"], **override)))
    assert len(client.get("/api/runs").json()) == before


def test_unknown_method_type(client, dataset):
    res = client.post("/api/runs", json=config(dataset["id"], method={"type": "magic"}))
    assert res.status_code == 422 and "magic" in res.text


def test_references_are_checked(client, dataset):
    assert _locs(client.post("/api/runs", json=config(999999))) == [["body", "dataset_id"]]
    assert _locs(client.post("/api/runs", json=config(dataset["id"], base_model="nope"))) == [["body", "base_model"]]
    res = client.post("/api/runs", json=config(dataset["id"], columns={"text": "sentence", "label": "missing"}))
    assert _locs(res) == [["body", "columns", "label"]]
    assert "'missing' is not in the dataset" in res.json()["detail"][0]["msg"]
    res = client.post("/api/runs", json=config(dataset["id"], eval_dataset_id=424242))
    assert _locs(res) == [["body", "eval_dataset_id"]]


def test_columns_must_fit_the_task(client, dataset):
    res = client.post("/api/runs", json=config(dataset["id"], columns={"text": "sentence"}))
    assert res.status_code == 422 and "classification needs columns.text and columns.label" in res.text
    res = client.post("/api/runs", json=config(dataset["id"], task="causal_lm", columns={"prompt": "sentence"}))
    assert res.status_code == 422 and "causal_lm needs" in res.text


def test_cancel_queued_then_refuse_second_cancel_and_delete(client, dataset, created):
    run = client.post("/api/runs", json=config(dataset["id"])).json()
    created.append(run["id"])
    res = client.post(f"/api/runs/{run['id']}/cancel")
    assert res.status_code == 200 and res.json()["status"] == "cancelled"
    assert client.post(f"/api/runs/{run['id']}/cancel").status_code == 409
    assert client.get("/api/runs", params={"status": "cancelled"}).json()[0]["id"] == run["id"]
    assert all(r["status"] == "queued" for r in client.get("/api/runs", params={"status": "queued"}).json())
    assert client.delete(f"/api/runs/{run['id']}").status_code == 204
    assert client.get(f"/api/runs/{run['id']}").status_code == 404


def test_dataset_in_use_cannot_be_deleted(client, dataset, created):
    run = client.post("/api/runs", json=config(dataset["id"])).json()
    created.append(run["id"])
    res = client.delete(f"/api/datasets/{dataset['id']}")
    assert res.status_code == 409 and str(run["id"]) in res.json()["detail"]


def test_running_run_cannot_be_deleted_and_cancel_flags_it(client, dataset, created, settings):
    run = client.post("/api/runs", json=config(dataset["id"])).json()
    created.append(run["id"])
    with session_scope() as s:
        assert lifecycle.claim(s, run["id"], "test-worker", 60)
    assert client.delete(f"/api/runs/{run['id']}").status_code == 409
    assert client.post(f"/api/runs/{run['id']}/cancel").json()["cancel_requested"] is True
    with session_scope() as s:
        assert lifecycle.heartbeat(s, run["id"], "test-worker", 60) is True  # the worker learns of it
        assert lifecycle.finish(s, run["id"], "test-worker", "cancelled")


def test_lists_filter_by_method_and_dataset(client, dataset, created):
    run = client.post("/api/runs", json=config(dataset["id"], method={"type": "full"})).json()
    created.append(run["id"])
    assert [r["id"] for r in client.get("/api/runs", params={"method": "full", "dataset_id": dataset["id"]}).json()] == [run["id"]]
    assert client.get("/api/runs", params={"status": "bogus"}).status_code == 422
    assert client.get("/api/runs/987654").status_code == 404


def test_metrics_of_a_run_without_points(client, dataset, created):
    run = client.post("/api/runs", json=config(dataset["id"])).json()
    created.append(run["id"])
    assert client.get(f"/api/runs/{run['id']}/metrics").json() == {"series": {}}
    res = client.get(f"/api/runs/{run['id']}/adapter")
    assert res.status_code == 404 and "no adapter" in res.json()["detail"]


def test_search_by_name_any_case_with_wildcards_taken_literally(client, dataset, created):
    for name in ("Sweep LoRA r=8", "sweep 100%_done", "baseline"):
        created.append(client.post("/api/runs", json=config(dataset["id"], name=name)).json()["id"])
    names = lambda **p: sorted(r["name"] for r in client.get("/api/runs", params={"dataset_id": dataset["id"], **p}).json())
    assert names(q="SWEEP") == ["Sweep LoRA r=8", "sweep 100%_done"]
    assert names(q="%_") == ["sweep 100%_done"]  # not LIKE patterns
    assert names(q="  lora ") == ["Sweep LoRA r=8"]
    assert names(q="nothing like it") == []
    res = client.get("/api/runs", params={"q": "x" * 101})
    assert res.status_code == 422


def test_queued_runs_show_their_place_in_the_queue(client, dataset, created):
    first = client.post("/api/runs", json=config(dataset["id"])).json()["id"]
    second = client.post("/api/runs", json=config(dataset["id"])).json()["id"]
    gone = client.post("/api/runs", json=config(dataset["id"])).json()["id"]
    created.extend([first, second, gone])
    client.post(f"/api/runs/{gone}/cancel")
    rows = {r["id"]: r for r in client.get("/api/runs", params={"dataset_id": dataset["id"]}).json()}
    assert rows[first]["queue_position"] >= 1
    assert rows[second]["queue_position"] == rows[first]["queue_position"] + 1
    assert rows[gone]["queue_position"] is None


def test_list_carries_the_metric_figures_asked_for(client, dataset, created):
    from app.metrics.service import record_points

    run = client.post("/api/runs", json=config(dataset["id"])).json()["id"]
    other = client.post("/api/runs", json=config(dataset["id"])).json()["id"]
    created.extend([run, other])
    with session_scope() as s:
        record_points(s, run, [("eval/accuracy", 10, 0.5), ("eval/accuracy", 20, 0.9), ("eval/accuracy", 30, 0.8),
                               ("train/loss", 30, 0.25)])
    rows = {r["id"]: r for r in client.get("/api/runs", params={"dataset_id": dataset["id"],
                                                                 "metrics": "eval/accuracy,train/loss"}).json()}
    assert rows[run]["metrics"] == {"eval/accuracy": {"min": 0.5, "max": 0.9, "last": 0.8},
                                    "train/loss": {"min": 0.25, "max": 0.25, "last": 0.25}}
    assert rows[other]["metrics"] == {}
    plain = client.get("/api/runs", params={"dataset_id": dataset["id"]}).json()
    assert all(r["metrics"] == {} for r in plain)
    res = client.get("/api/runs", params={"metrics": ",".join(f"m/{i}" for i in range(9))})
    assert res.status_code == 422 and "at most 8" in res.json()["detail"]
