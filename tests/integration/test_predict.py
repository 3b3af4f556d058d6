"""Predictions through a real worker process: POST /api/runs/{id}/predict on trained runs."""
import csv
import io

import pytest

from app.db import session_scope
from app.runs.models import Run
from tests.conftest import wait_for_status
from tests.integration.test_end_to_end import sentiment_csv
from tests.tiny_models import make_tiny_gpt2, opposite_rows

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_ids(app, tiny_bert_source, admin_account, tmp_path_factory):
    from fastapi.testclient import TestClient

    gpt2 = make_tiny_gpt2(tmp_path_factory.mktemp("predict-gpt2"))
    with TestClient(app, headers=admin_account.headers) as c:
        ids = {}
        for name, source in (("bert", tiny_bert_source), ("gpt2", str(gpt2))):
            res = c.post("/api/models", json={"name": f"tiny {name} predict", "source": source})
            assert res.status_code == 201, res.text
            ids[name] = res.json()["id"]
        return ids


def _train(client, body) -> dict:
    res = client.post("/api/runs", json=body)
    assert res.status_code == 201, res.text
    done = wait_for_status(lambda: client.get(f"/api/runs/{res.json()['id']}").json(), ("succeeded", "failed"))
    assert done["status"] == "succeeded", f"{done['error']}\n{done['traceback']}"
    return done


@pytest.fixture(scope="module")
def lora_run(app, admin_account, worker_process, model_ids):
    from fastapi.testclient import TestClient

    with TestClient(app, headers=admin_account.headers) as c:
        ds = c.post("/api/datasets", files={"file": ("predict.csv", sentiment_csv(120, seed=7))}).json()
        run = _train(c, {"name": "predict lora", "dataset_id": ds["id"], "base_model": model_ids["bert"],
                         "eval_fraction": 0.25, "columns": {"text": "review", "label": "sentiment"},
                         "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
                         "training": {"learning_rate": 0.03, "batch_size": 16, "max_steps": 30, "eval_every": 30,
                                      "seed": 1}})
        return run, ds


def test_predictions_match_the_runs_own_evaluation(client, lora_run):
    run, ds = lora_run
    stored = client.get(f"/api/runs/{run['id']}/predictions").json()["rows"]
    rows = client.get(f"/api/datasets/{ds['id']}/rows", params={"limit": 1000}).json()["rows"]
    texts = [rows[p["row"]]["review"] for p in stored]
    assert 0 < len(texts) <= 64

    res = client.post(f"/api/runs/{run['id']}/predict", json={"inputs": texts})
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["base_outputs"] is None and len(out["outputs"]) == len(texts)
    assert [o["label"] for o in out["outputs"]] == [p["prediction"] for p in stored]
    labels = sorted(out["outputs"][0]["probs"])
    assert labels == ["neg", "pos"]
    for o, p in zip(out["outputs"], stored):
        assert sum(o["probs"].values()) == pytest.approx(1, abs=1e-4)
        assert max(o["probs"], key=o["probs"].get) == o["label"]
        assert list(o["probs"].values()) == pytest.approx(p["probs"], abs=1e-3)


def test_compare_base_answers_with_the_untrained_model(client, lora_run):
    run, _ = lora_run
    texts = ["good great excellent movie", "bad awful terrible film"]
    res = client.post(f"/api/runs/{run['id']}/predict", json={"inputs": texts, "compare_base": True})
    assert res.status_code == 200, res.text
    out = res.json()
    assert [o["label"] for o in out["outputs"]] == ["pos", "neg"]
    assert len(out["base_outputs"]) == 2
    for trained, base in zip(out["outputs"], out["base_outputs"]):
        assert set(base["probs"]) == {"neg", "pos"}
        assert abs(trained["probs"]["pos"] - base["probs"]["pos"]) > 1e-3
    # The base model alone barely separates the two texts; the trained one does.
    spread = lambda outputs: abs(outputs[0]["probs"]["pos"] - outputs[1]["probs"]["pos"])  # noqa: E731
    assert spread(out["outputs"]) > spread(out["base_outputs"])


def test_causal_lm_generates_text(client, worker_process, model_ids):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["prompt", "response", "text"])
    writer.writeheader()
    writer.writerows(opposite_rows(64))
    ds = client.post("/api/datasets", files={"file": ("opposites.csv", out.getvalue().encode())}).json()
    run = _train(client, {"name": "predict causal", "dataset_id": ds["id"], "base_model": model_ids["gpt2"],
                          "task": "causal_lm", "eval_fraction": 0.1,
                          "columns": {"prompt": "prompt", "response": "response"},
                          "method": {"type": "lora", "r": 4, "dropout": 0.0},
                          "training": {"learning_rate": 0.01, "batch_size": 8, "max_steps": 6, "eval_every": 6}})
    res = client.post(f"/api/runs/{run['id']}/predict",
                      json={"inputs": ["the opposite of up is :"], "max_new_tokens": 3, "compare_base": True})
    assert res.status_code == 200, res.text
    data = res.json()
    for outputs in (data["outputs"], data["base_outputs"]):
        assert len(outputs) == 1 and isinstance(outputs[0]["text"], str)
        assert 1 <= len(outputs[0]["text"].split()) <= 3  # at most max_new_tokens words of the vocabulary
    # Lists of turns are for chat runs; this one trained on prompt/response text.
    res = client.post(f"/api/runs/{run['id']}/predict", json={"inputs": [[{"role": "user", "content": "up"}]]})
    assert res.status_code == 422 and "not trained on chat data" in res.text


def test_runs_that_did_not_succeed_cannot_predict(client, worker_process, model_ids, lora_run):
    # A run that fails on the worker: its dataset file vanished after the upload (the server cannot know).
    from app.config import get_settings
    from app.datasets.models import Dataset
    from app.datasets.service import dataset_file
    from app.db import session_scope
    from tests.integration.test_end_to_end import sentiment_csv

    ds = client.post("/api/datasets", files={"file": ("gone.csv", sentiment_csv(32, seed=8))}).json()
    with session_scope() as session:
        dataset_file(get_settings(), session.get(Dataset, ds["id"])).unlink()
    failed = client.post("/api/runs", json={
        "dataset_id": ds["id"], "base_model": model_ids["bert"], "columns": {"text": "review", "label": "sentiment"},
        "method": {"type": "lora"}, "training": {"max_steps": 2}}).json()
    failed = wait_for_status(lambda: client.get(f"/api/runs/{failed['id']}").json(), ("failed", "succeeded"))
    assert failed["status"] == "failed"
    res = client.post(f"/api/runs/{failed['id']}/predict", json={"inputs": ["good"]})
    assert res.status_code == 409 and "status: failed" in res.json()["detail"]

    # A queued run (written straight to SQL, so no worker takes it).
    with session_scope() as s:
        queued = Run(name="never sent", status="queued", config={}, summary={}, dataset_id=ds["id"],
                     base_model=model_ids["bert"], method="lora", task="classification",
                     project_id=s.get(Run, failed["id"]).project_id)
        s.add(queued)
        s.flush()
        queued_id = queued.id
    try:
        res = client.post(f"/api/runs/{queued_id}/predict", json={"inputs": ["good"]})
        assert res.status_code == 409 and "status: queued" in res.json()["detail"]
    finally:
        with session_scope() as s:
            s.delete(s.get(Run, queued_id))


# The methods added through the registry: each trains on a real worker and answers Try it (with the
# base model beside it), and its answers are those of the run's own evaluation.
NEW_METHODS = [{"type": "ia3"}, {"type": "vera", "r": 8}, {"type": "ln_tuning"}, {"type": "bitfit"},
               {"type": "freeze", "trainable_layers": 1}, {"type": "lora", "use_dora": True},
               {"type": "lora", "init": "pissa", "use_rslora": True}]


@pytest.mark.parametrize("method", NEW_METHODS, ids=lambda m: "-".join(str(v) for v in m.values()))
def test_new_methods_train_and_answer(client, worker_process, model_ids, method):
    ds = client.post("/api/datasets", files={"file": ("new-methods.csv", sentiment_csv(80, seed=3))}).json()
    run = _train(client, {"name": f"predict {method['type']}", "dataset_id": ds["id"], "base_model": model_ids["bert"],
                          "eval_fraction": 0.25, "columns": {"text": "review", "label": "sentiment"}, "method": method,
                          "training": {"batch_size": 16, "max_steps": 4, "eval_every": 4, "seed": 1}})
    assert run["config"]["method"]["type"] == method["type"] and run["summary"]["trainable_params"] > 0
    estimate = client.post(f"/api/models/{model_ids['bert']}/estimate",
                           json={"task": "classification", "num_labels": 2, "method": method}).json()
    assert estimate["trainable_params"] == run["summary"]["trainable_params"]
    stored = client.get(f"/api/runs/{run['id']}/predictions").json()["rows"]
    rows = client.get(f"/api/datasets/{ds['id']}/rows", params={"limit": 1000}).json()["rows"]
    texts = [rows[p["row"]]["review"] for p in stored][:8]
    res = client.post(f"/api/runs/{run['id']}/predict", json={"inputs": texts, "compare_base": True})
    assert res.status_code == 200, res.text
    out = res.json()
    assert len(out["outputs"]) == len(out["base_outputs"]) == len(texts)
    for o, p in zip(out["outputs"], stored):
        assert list(o["probs"].values()) == pytest.approx(p["probs"], abs=1e-3)
    zipped = client.get(f"/api/runs/{run['id']}/adapter")
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"
