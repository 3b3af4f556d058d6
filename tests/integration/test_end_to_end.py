"""The end-to-end slice against a real worker process: upload → LoRA run → live metrics → adapter.

Runs on SQLite + the embedded transport by default, and on PostgreSQL + Redis when
PEFTLAB_TEST_DATABASE_URL / PEFTLAB_TEST_BROKER_URL are set (CI does both).
"""
import io
import json
import random
import zipfile

import pytest

from tests.conftest import wait_for_status
from tests.tiny_models import NEGATIVE, NEUTRAL, POSITIVE

pytestmark = pytest.mark.integration


def sentiment_csv(n: int, seed: int = 0) -> bytes:
    """A learnable task: mostly positive words, or mostly negative ones (plus a neutral word)."""
    rng = random.Random(seed)
    lines = ["review,sentiment"]
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(POSITIVE if label == "pos" else NEGATIVE, 3) + [rng.choice(NEUTRAL[:12])]
        rng.shuffle(words)
        lines.append(f"{' '.join(words)},{label}")
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def tiny_model_id(app, tiny_bert_source, admin_account):
    from fastapi.testclient import TestClient

    with TestClient(app, headers=admin_account.headers) as c:
        res = c.post("/api/models", json={"name": "tiny bert e2e", "source": tiny_bert_source})
        assert res.status_code == 201, res.text
        assert res.json()["architecture"] == "BertModel" and res.json()["num_parameters"] > 0
        return res.json()["id"]


def _launch(client, dataset_id, model_id, **training):
    body = {"name": "e2e lora", "dataset_id": dataset_id, "base_model": model_id, "task": "classification",
            "eval_fraction": 0.25, "columns": {"text": "review", "label": "sentiment"},
            "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
            "training": {"learning_rate": 0.03, "batch_size": 16, "max_steps": 40, "eval_every": 10, "seed": 1,
                         **training}}
    res = client.post("/api/runs", json=body)
    assert res.status_code == 201, res.text
    return res.json()


def read_events(client, run_id, last_event_id=None) -> list[dict]:
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events, current = [], {}
    with client.stream("GET", f"/api/runs/{run_id}/events", headers=headers) as res:
        assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
        for line in res.iter_lines():
            if not line:
                if "event" in current:
                    events.append(current)
                current = {}
            elif line.startswith(("id:", "event:", "data:")):
                key, _, value = line.partition(":")
                current[key] = value.strip()
    return events


def test_lora_run_trains_streams_and_downloads(client, worker_process, tiny_model_id, tiny_bert_source, tmp_path):
    ds = client.post("/api/datasets", files={"file": ("sentiment.csv", sentiment_csv(160))}).json()
    run = _launch(client, ds["id"], tiny_model_id)
    done = wait_for_status(lambda: client.get(f"/api/runs/{run['id']}").json(), ("succeeded", "failed"))
    assert done["status"] == "succeeded", done["error"] + "\n" + (done["traceback"] or "")
    assert done["progress"] == 1.0 and done["started_at"] and done["finished_at"]

    # Summary fields of API.md
    summary = done["summary"]
    assert 0 < summary["trainable_params"] < summary["total_params"]
    assert summary["adapter_bytes"] > 0 and summary["peak_memory_bytes"] > 0
    assert summary["train_samples_per_s"] > 0 and summary["train_tokens_per_s"] > 0
    assert summary["eval"]["accuracy"] >= 0.8, summary  # the task is learnable; chance is 0.5
    assert 0 <= summary["eval"]["f1"] <= 1 and summary["eval"]["loss"] > 0

    # Metric series
    series = client.get(f"/api/runs/{run['id']}/metrics").json()["series"]
    for name in ("train/loss", "train/lr", "train/grad_norm", "train/samples_per_s", "train/tokens_per_s",
                 "train/epoch", "eval/loss", "eval/accuracy", "eval/f1", "system/memory_bytes"):
        assert series.get(name), f"no {name} points"
    assert [s for s, _ in series["train/loss"]] == list(range(1, 41))
    assert [s for s, _ in series["eval/accuracy"]] == [10, 20, 30, 40]
    first, last = series["train/loss"][0][1], sum(v for _, v in series["train/loss"][-5:]) / 5
    assert last < first, "the loss did not fall"
    only_loss = client.get(f"/api/runs/{run['id']}/metrics", params={"names": "train/loss", "max_points": 10}).json()
    assert list(only_loss["series"]) == ["train/loss"] and len(only_loss["series"]["train/loss"]) <= 10

    # The live stream: every point, increasing ids, a final status; Last-Event-ID replays the rest
    events = read_events(client, run["id"])
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    metric_events = [json.loads(e["data"]) for e in events if e["event"] == "metric"]
    assert len(metric_events) == sum(len(v) for v in client.get(
        f"/api/runs/{run['id']}/metrics", params={"max_points": 5000}).json()["series"].values())
    assert {"name", "step", "value", "time"} <= set(metric_events[0])
    assert json.loads([e for e in events if e["event"] == "status"][-1]["data"]) == {"status": "succeeded", "progress": 1.0}
    cut = len(events) // 2
    replay = read_events(client, run["id"], last_event_id=events[cut - 1]["id"])
    assert [e["id"] for e in replay if e["event"] == "metric"] == [e["id"] for e in events[cut:] if e["event"] == "metric"]

    # The adapter: a PEFT directory that reproduces the worker's predictions
    res = client.get(f"/api/runs/{run['id']}/adapter")
    assert res.status_code == 200 and res.headers["content-type"] == "application/zip"
    assert f"peftlab-run-{run['id']}-adapter.zip" in res.headers["content-disposition"]
    adapter_dir = tmp_path / "adapter"
    zipfile.ZipFile(io.BytesIO(res.content)).extractall(adapter_dir)
    assert (adapter_dir / "adapter_config.json").is_file() and (adapter_dir / "adapter_model.safetensors").is_file()
    assert not list(adapter_dir.rglob("*.bin")) and not list(adapter_dir.rglob("*.pt"))
    predictions = client.get(f"/api/runs/{run['id']}/predictions").json()["rows"]
    assert len(predictions) == 40  # 25% of 160

    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    meta = json.loads((adapter_dir / "peftlab.json").read_text())
    labels = meta["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_source, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)})
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    rows = client.get(f"/api/datasets/{ds['id']}/rows", params={"limit": 1000}).json()["rows"]
    texts = [rows[p["row"]]["review"] for p in predictions]
    with torch.no_grad():
        logits = model(**tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=128)).logits
    assert [labels[i] for i in logits.argmax(-1).tolist()] == [p["prediction"] for p in predictions]
    assert [rows[p["row"]]["sentiment"] for p in predictions] == [p["label"] for p in predictions]


def test_cancel_stops_a_running_run_and_the_worker_takes_the_next(client, worker_process, tiny_model_id):
    ds = client.post("/api/datasets", files={"file": ("cancel.csv", sentiment_csv(64, seed=3))}).json()
    long_run = _launch(client, ds["id"], tiny_model_id, max_steps=1_000_000, batch_size=2, eval_every=100_000)
    next_run = _launch(client, ds["id"], tiny_model_id, max_steps=4, eval_every=2)
    get_long = lambda: client.get(f"/api/runs/{long_run['id']}").json()  # noqa: E731
    wait_for_status(get_long, ("running",), timeout=120)
    wait_for_status(lambda: {**get_long(), "status": "ok" if get_long()["progress"] > 0 or client.get(
        f"/api/runs/{long_run['id']}/metrics").json()["series"] else "waiting"}, ("ok",), timeout=60)
    assert client.post(f"/api/runs/{long_run['id']}/cancel").status_code == 200
    cancelled = wait_for_status(get_long, ("cancelled", "failed", "succeeded"), timeout=30)
    assert cancelled["status"] == "cancelled"
    assert client.get(f"/api/runs/{long_run['id']}/metrics").json()["series"]["train/loss"]  # kept
    after = wait_for_status(lambda: client.get(f"/api/runs/{next_run['id']}").json(), ("succeeded", "failed"))
    assert after["status"] == "succeeded", after["error"]
    assert client.post(f"/api/runs/{long_run['id']}/cancel").status_code == 409


def test_a_failing_run_records_the_reason_and_traceback(client, worker_process, tiny_model_id):
    # What the server cannot know at submit: the dataset's stored file vanished from the disk.
    from app.config import get_settings
    from app.datasets.models import Dataset
    from app.datasets.service import dataset_file
    from app.db import session_scope

    ds = client.post("/api/datasets", files={"file": ("fail.csv", sentiment_csv(32, seed=5))}).json()
    with session_scope() as session:
        stored = dataset_file(get_settings(), session.get(Dataset, ds["id"]))
    stored.unlink()
    body = {"dataset_id": ds["id"], "base_model": tiny_model_id, "columns": {"text": "review", "label": "sentiment"},
            "method": {"type": "lora"}, "training": {"max_steps": 2}}
    run = client.post("/api/runs", json=body)
    assert run.status_code == 201, run.text
    failed = wait_for_status(lambda: client.get(f"/api/runs/{run.json()['id']}").json(), ("failed", "succeeded"))
    assert failed["status"] == "failed"
    assert stored.name in failed["error"]
    assert "Traceback" in failed["traceback"]
