"""Every seed method through the API: per-method field errors, AdapterFusion's references, the
trainable-parameter estimate, prediction requests (without a worker) and the merged download."""
import io
import threading
import zipfile

import pytest

from app.artifacts.service import record_artifact, run_artifact_dir
from app.datasets.models import Dataset
from app.db import session_scope
from app.inference import service as inference
from app.inference.models import InferenceRequest
from app.runs.models import Run

FUSION_LOC = ["body", "method", "adapter_fusion", "adapter_run_ids"]


@pytest.fixture
def dataset(client):
    csv = "sentence,label\n" + "".join(f"good movie {i},pos\nbad film {i},neg\n" for i in range(10))
    return client.post("/api/datasets", files={"file": ("methods.csv", csv.encode())}).json()


@pytest.fixture
def fake_runs(dataset, settings):
    """make(method=..., status=..., ...) → id of a run row written straight to SQL (no worker
    involved); rows and their artifact directories are removed afterwards."""
    ids: list[int] = []

    def make(*, method="adapter", status="succeeded", base_model="minilm-l6", task="classification",
             variant="houlsby", adapter=False) -> int:
        with session_scope() as s:
            project_id = s.get(Dataset, dataset["id"]).project_id
            method_config = {"type": method, "variant": variant} if method == "adapter" else {"type": method}
            run = Run(name=f"fake {method}", status=status, config={"method": method_config}, summary={},
                      dataset_id=dataset["id"], base_model=base_model, method=method, task=task,
                      project_id=project_id)
            s.add(run)
            s.flush()
            run_id = run.id
        if adapter:
            path = run_artifact_dir(settings, run_id, "adapter")
            (path / "peftlab.json").write_text("{}")
            with session_scope() as s:
                record_artifact(s, run_id, "adapter", path)
        ids.append(run_id)
        return run_id

    yield make
    from app.artifacts.service import delete_for_run

    with session_scope() as s:
        for run_id in ids:
            if (run := s.get(Run, run_id)) is not None:
                s.delete(run)
        s.commit()
        for run_id in ids:
            delete_for_run(s, settings=settings, run_id=run_id)


def body(dataset_id, method, **over):
    return {"dataset_id": dataset_id, "base_model": "minilm-l6", "task": "classification",
            "columns": {"text": "sentence", "label": "label"}, "method": method,
            "training": {"max_steps": 2}, **over}


def errors(res) -> list[dict]:
    assert res.status_code == 422, res.text
    return res.json()["detail"]


# ---- per-method field errors ------------------------------------------------------------------

@pytest.mark.parametrize("method, loc, words", [
    ({"type": "prompt", "init": "text"}, ["body", "method", "prompt", "init_text"], "init_text"),
    ({"type": "prompt", "init": "text", "init_text": "   "}, ["body", "method", "prompt", "init_text"], "init_text"),
    ({"type": "prompt", "init": "words"}, ["body", "method", "prompt", "init"], "random"),
    ({"type": "ptuning", "encoder": "gru"}, ["body", "method", "ptuning", "encoder"], "mlp"),
    ({"type": "ptuning", "encoder_hidden_size": 0}, ["body", "method", "ptuning", "encoder_hidden_size"], "greater"),
    ({"type": "adapter", "variant": "compacter"}, ["body", "method", "adapter", "variant"], "houlsby"),
    ({"type": "adapter", "reduction_factor": 0}, ["body", "method", "adapter", "reduction_factor"], "greater"),
    ({"type": "adapter", "non_linearity": "softmax"}, ["body", "method", "adapter", "non_linearity"], "relu"),
    ({"type": "prefix", "num_virtual_tokens": 0}, ["body", "method", "prefix", "num_virtual_tokens"], "greater"),
    ({"type": "prefix", "projection": "maybe"}, ["body", "method", "prefix", "projection"], "bool"),
    ({"type": "adapter_fusion", "adapter_run_ids": [1]}, FUSION_LOC, "at least 2"),
    ({"type": "adapter_fusion", "adapter_run_ids": [3, 3]}, ["body", "method", "adapter_fusion"], "repeat"),
    ({"type": "full", "r": 8}, ["body", "method", "full", "r"], "not permitted"),
])
def test_method_fields_are_refused_by_name(client, dataset, method, loc, words):
    detail = errors(client.post("/api/runs", json=body(dataset["id"], method)))
    assert any(e["loc"] == loc and words in e["msg"] for e in detail), detail


def test_method_defaults_are_stored(client, dataset):
    created = []
    expected = {
        "adapter": {"variant": "houlsby", "reduction_factor": 16, "non_linearity": "relu"},
        "prefix": {"num_virtual_tokens": 20, "projection": False, "encoder_hidden_size": 512},
        "ptuning": {"num_virtual_tokens": 20, "encoder": "mlp", "encoder_hidden_size": 128},
        "prompt": {"num_virtual_tokens": 20, "init": "random", "init_text": None},
    }
    try:
        for kind, defaults in expected.items():
            res = client.post("/api/runs", json=body(dataset["id"], {"type": kind}))
            assert res.status_code == 201, res.text
            created.append(res.json()["id"])
            assert res.json()["config"]["method"] == {"type": kind, **defaults}
    finally:
        for run_id in created:
            client.post(f"/api/runs/{run_id}/cancel")
            client.delete(f"/api/runs/{run_id}")


# ---- AdapterFusion references -----------------------------------------------------------------

def fusion(client, dataset, ids, **over):
    return client.post("/api/runs", json=body(dataset["id"], {"type": "adapter_fusion", "adapter_run_ids": ids}, **over))


def only_fusion_errors(res) -> list[str]:
    detail = errors(res)
    assert all(e["loc"] == FUSION_LOC for e in detail), detail
    return [e["msg"] for e in detail]


def test_fusion_refuses_missing_runs(client, dataset, fake_runs):
    good = fake_runs()
    assert only_fusion_errors(fusion(client, dataset, [good, 987654])) == ["Run 987654 does not exist."]


def test_fusion_refuses_runs_of_another_method(client, dataset, fake_runs):
    good, lora = fake_runs(), fake_runs(method="lora")
    [msg] = only_fusion_errors(fusion(client, dataset, [good, lora]))
    assert f"Run {lora}" in msg and "lora run, not an Adapter run" in msg


@pytest.mark.parametrize("status", ["queued", "running", "failed", "cancelled"])
def test_fusion_refuses_runs_that_have_not_succeeded(client, dataset, fake_runs, status):
    good, other = fake_runs(), fake_runs(status=status)
    [msg] = only_fusion_errors(fusion(client, dataset, [good, other]))
    assert f"Run {other}" in msg and f"has not succeeded (status: {status})" in msg


def test_fusion_refuses_another_base_model_or_task(client, dataset, fake_runs):
    good, elsewhere, lm = fake_runs(), fake_runs(base_model="tiny-gpt"), fake_runs(task="causal_lm")
    msgs = only_fusion_errors(fusion(client, dataset, [good, elsewhere, lm]))
    assert len(msgs) == 2
    assert f"Run {elsewhere}" in msgs[0] and "base model 'tiny-gpt', not 'minilm-l6'" in msgs[0]
    assert f"Run {lm}" in msgs[1] and "for causal_lm, not classification" in msgs[1]


def test_fusion_refuses_mixed_variants(client, dataset, fake_runs):
    houlsby, pfeiffer = fake_runs(variant="houlsby"), fake_runs(variant="pfeiffer")
    [msg] = only_fusion_errors(fusion(client, dataset, [houlsby, pfeiffer]))
    assert "one variant" in msg and f"run {pfeiffer}: pfeiffer" in msg


def test_fusion_of_good_adapter_runs_is_queued(client, dataset, fake_runs):
    ids = [fake_runs(), fake_runs()]
    res = fusion(client, dataset, ids)
    assert res.status_code == 201, res.text
    run = res.json()
    assert run["method"] == "adapter_fusion" and run["config"]["method"]["adapter_run_ids"] == ids
    client.post(f"/api/runs/{run['id']}/cancel")
    client.delete(f"/api/runs/{run['id']}")


# ---- trainable-parameter estimate -------------------------------------------------------------

MINILM_HEAD = 384 * 2 + 2  # d = 384, 6 layers, 2 labels


def estimate(client, method, model="minilm-l6", **over):
    return client.post(f"/api/models/{model}/estimate", json={"task": "classification", "num_labels": 2,
                                                              "method": method, **over})


@pytest.mark.parametrize("method, trainable", [
    ({"type": "lora"}, 2 * 6 * 2 * 384 * 8 + MINILM_HEAD),
    ({"type": "lora", "r": 2, "target_modules": ["query"]}, 6 * 2 * (384 + 384) + MINILM_HEAD),
    ({"type": "adapter"}, 2 * 6 * (2 * 384 * 24 + 24 + 384) + MINILM_HEAD),
    ({"type": "adapter", "variant": "pfeiffer"}, 6 * (2 * 384 * 24 + 24 + 384) + MINILM_HEAD),
    ({"type": "prefix"}, 20 * 6 * 2 * 384 + MINILM_HEAD),
    ({"type": "ptuning"}, 20 * 384 + (384 * 128 + 128) + (128 * 128 + 128) + (128 * 384 + 384) + MINILM_HEAD),
    ({"type": "prompt", "num_virtual_tokens": 10}, 10 * 384 + MINILM_HEAD),
])
def test_estimate_follows_the_design_formulas(client, method, trainable):
    res = estimate(client, method)
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["trainable_params"] == trainable and out["exact"] is True
    assert out["total_params"] > out["trainable_params"]
    assert out["percent"] == pytest.approx(100 * trainable / out["total_params"])


def test_full_fine_tuning_trains_everything(client):
    out = estimate(client, {"type": "full"}).json()
    assert out["trainable_params"] == out["total_params"] and out["percent"] == pytest.approx(100)
    minilm = next(m for m in client.get("/api/models").json() if m["id"] == "minilm-l6")
    assert out["total_params"] == minilm["num_parameters"] + MINILM_HEAD


def test_fusion_estimate_uses_the_adapters_variant(client, fake_runs):
    ids = [fake_runs(variant="pfeiffer"), fake_runs(variant="pfeiffer")]
    out = estimate(client, {"type": "adapter_fusion", "adapter_run_ids": ids}).json()
    assert out["exact"] is True and out["trainable_params"] == 6 * 3 * 384 * 384 + MINILM_HEAD
    unknown = estimate(client, {"type": "adapter_fusion", "adapter_run_ids": [987654, 987655]}).json()
    assert unknown["exact"] is False and "not known" in unknown["note"]


def test_estimate_errors(client):
    assert estimate(client, {"type": "lora"}, model="no-such-model").status_code == 404
    detail = errors(estimate(client, {"type": "ptuning", "encoder": "gru"}))
    assert detail[0]["loc"] == ["body", "method", "ptuning", "encoder"]
    res = estimate(client, {"type": "adapter", "reduction_factor": 1000})
    assert res.status_code == 422 and "bottleneck" in res.json()["detail"]
    unknown = estimate(client, {"type": "lora", "target_modules": ["no_such_layer"]}).json()
    assert unknown["exact"] is False and "no_such_layer" in unknown["note"]


# ---- predictions, without a worker ------------------------------------------------------------

def predict(client, run_id, **payload):
    return client.post(f"/api/runs/{run_id}/predict", json={"inputs": ["good movie"], **payload})


@pytest.mark.parametrize("payload, loc", [
    ({"inputs": []}, ["body", "inputs"]),
    ({"inputs": ["x"] * 65}, ["body", "inputs"]),
    ({"inputs": ["x" * 4001]}, ["body", "inputs", 0]),
    ({"inputs": [""]}, ["body", "inputs", 0]),
    ({"max_new_tokens": 0}, ["body", "max_new_tokens"]),
    ({"temperature": -1}, ["body", "temperature"]),
])
def test_predict_validates_inputs(client, fake_runs, payload, loc):
    run_id = fake_runs(method="lora", adapter=True)
    # An input is a text or a conversation: a bad text is reported under its index (then the union's branch).
    assert any(e["loc"][:len(loc)] == loc for e in errors(predict(client, run_id, **payload)))


@pytest.mark.parametrize("status", ["queued", "running", "failed", "cancelled"])
def test_predict_needs_a_succeeded_run(client, fake_runs, status):
    res = predict(client, fake_runs(method="lora", status=status))
    assert res.status_code == 409 and f"status: {status}" in res.json()["detail"]


def test_predict_on_a_missing_run_or_without_adapter(client, fake_runs):
    assert predict(client, 987654).status_code == 404
    res = predict(client, fake_runs(method="lora"))
    assert res.status_code == 409 and "no saved adapter" in res.json()["detail"]


def test_predict_returns_what_the_worker_writes(client, fake_runs, monkeypatch):
    """The server's half: enqueue, wait (polling) for the row, answer, forget the row."""
    seen = []

    def fake_worker(request_id):
        def work():
            with session_scope() as s:
                assert inference.claim(s, request_id)
                row = s.get(InferenceRequest, request_id)
                seen.append((row.inputs, row.params))
                inference.answer(s, request_id, outputs=[{"label": "pos", "probs": {"neg": 0.1, "pos": 0.9}}],
                                 base_outputs=[{"label": "neg", "probs": {"neg": 0.6, "pos": 0.4}}])
        threading.Timer(0.3, work).start()

    monkeypatch.setattr(inference, "send_predict", fake_worker)
    run_id = fake_runs(method="lora", adapter=True)
    res = predict(client, run_id, compare_base=True)
    assert res.status_code == 200, res.text
    assert res.json() == {"outputs": [{"label": "pos", "probs": {"neg": 0.1, "pos": 0.9}}],
                          "base_outputs": [{"label": "neg", "probs": {"neg": 0.6, "pos": 0.4}}]}
    assert seen == [(["good movie"], {"compare_base": True, "max_new_tokens": 32, "temperature": 0.0})]
    with session_scope() as s:
        assert s.query(InferenceRequest).filter_by(run_id=run_id).count() == 0


def test_predict_reports_worker_errors_and_timeouts(client, fake_runs, monkeypatch):
    run_id = fake_runs(method="lora", adapter=True)

    def failing_worker(request_id):
        with session_scope() as s:
            inference.claim(s, request_id)
            inference.answer(s, request_id, error="the base model directory is gone")

    monkeypatch.setattr(inference, "send_predict", failing_worker)
    res = predict(client, run_id)
    assert res.status_code == 502 and "the base model directory is gone" in res.json()["detail"]

    monkeypatch.setattr(inference, "send_predict", lambda request_id: None)  # nobody listens
    monkeypatch.setattr(inference, "TIMEOUT_SECONDS", 0.5)
    res = predict(client, run_id)
    assert res.status_code == 504 and "No prediction worker answered" in res.json()["detail"]
    with session_scope() as s:
        assert s.query(InferenceRequest).filter_by(run_id=run_id).all() == []  # the inputs are not kept

    def broker_down(request_id):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(inference, "send_predict", broker_down)
    res = predict(client, run_id)
    assert res.status_code == 503 and "connection refused" in res.json()["detail"]


# ---- merged download --------------------------------------------------------------------------

def test_merged_download(client, fake_runs, settings):
    lora = fake_runs(method="lora", adapter=True)
    res = client.get(f"/api/runs/{lora}/merged")
    assert res.status_code == 404 and "no merged model" in res.json()["detail"]
    adapter = fake_runs(method="adapter", adapter=True)
    assert "only LoRA runs" in client.get(f"/api/runs/{adapter}/merged").json()["detail"]

    merged = run_artifact_dir(settings, lora, "merged")
    (merged / "config.json").write_text('{"model_type": "bert"}')
    (merged / "model.safetensors").write_bytes(b"weights")
    with session_scope() as s:
        record_artifact(s, lora, "merged", merged)
    assert {"kind": "merged", "size_bytes": 29} in client.get(f"/api/runs/{lora}/artifacts").json()
    res = client.get(f"/api/runs/{lora}/merged")
    assert res.status_code == 200 and res.headers["content-type"] == "application/zip"
    assert f"peftlab-run-{lora}-merged.zip" in res.headers["content-disposition"]
    assert sorted(zipfile.ZipFile(io.BytesIO(res.content)).namelist()) == ["config.json", "model.safetensors"]
