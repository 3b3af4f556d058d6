"""The peak-memory estimate of POST /api/models/{id}/estimate, and POST /api/runs refusing a run that
no worker seen in the last hour could fit (app/models/memory.py, app/runs/checks.py)."""
from datetime import datetime, timedelta, timezone

import pytest

from app.db import session_scope
from app.models.models import BaseModel
from app.worker_status.models import Worker

GIB = 2**30
MODEL_ID = "llama-1b-shape"
# The shape of the 1B Llama (hidden 2048, 16 layers, 16 heads, 8 kv heads, 5632, 32000).
FACTS = {"model_type": "llama", "architecture": "LlamaForCausalLM", "hidden_size": 2048, "num_layers": 16,
         "num_heads": 16, "num_key_value_heads": 8, "head_dim": None, "intermediate_size": 5632, "vocab_size": 32000,
         "max_positions": 4096, "tie_word_embeddings": False, "num_parameters": 886_114_304}
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA = {"type": "lora", "r": 16, "target_modules": ALL_LINEAR}


@pytest.fixture
def big_model(app):
    with session_scope() as s:
        if s.get(BaseModel, MODEL_ID) is None:
            s.add(BaseModel(id=MODEL_ID, name="1B Llama shape", source="example/llama-1b", architecture="LlamaForCausalLM",
                            num_parameters=FACTS["num_parameters"], facts=FACTS))
            s.commit()
    return MODEL_ID


@pytest.fixture
def workers(app):
    """Worker rows as workers report them; the table is emptied before and after."""
    def clear():
        with session_scope() as s:
            s.query(Worker).delete()
            s.commit()

    def add(name: str, kind: str, memory: int | None, seen_ago: timedelta = timedelta(minutes=1)):
        with session_scope() as s:
            s.add(Worker(name=name, device={"kind": kind, "name": f"{kind} {name}"}, memory_bytes=memory,
                         last_seen=datetime.now(timezone.utc) - seen_ago))
            s.commit()

    clear()
    yield add
    clear()


def estimate(client, training: dict, method: dict = LORA, model: str = MODEL_ID, task: str = "causal_lm") -> dict:
    res = client.post(f"/api/models/{model}/estimate", json={"task": task, "method": method, "training": training})
    assert res.status_code == 200, res.text
    return res.json()


BASE = {"batch_size": 4, "max_length": 1024}


def test_the_parts_sum_to_the_total(client, big_model, workers):
    est = estimate(client, {**BASE, "precision": "bf16"})
    memory = est["memory"]
    assert est["memory_bytes"] == sum(memory["parts"].values())
    assert set(memory["parts"]) >= {"weights", "trainable_weights", "gradients", "optimizer_states", "activations",
                                    "logits", "workspace"}
    # AdamW keeps two fp32 states per trainable parameter; trainable weights and gradients are fp32.
    assert memory["parts"]["optimizer_states"] == 8 * est["trainable_params"]
    assert memory["parts"]["gradients"] == memory["parts"]["trainable_weights"] == 4 * est["trainable_params"]
    assert memory["tokens"] == 4 * 1024 and memory["precision"] == "bf16"
    # The frozen weights of a 0.9B model in bf16: 2 bytes each.
    frozen = est["total_params"] - est["trainable_params"]
    assert memory["weights_by_dtype"] == {"bf16": 2 * frozen} == {"bf16": memory["parts"]["weights"]}


def test_bf16_halves_the_weights(client, big_model, workers):
    fp32, bf16 = (estimate(client, {**BASE, "precision": p})["memory"] for p in ("fp32", "bf16"))
    assert bf16["parts"]["weights"] * 2 == fp32["parts"]["weights"]
    assert bf16["parts"]["optimizer_states"] == fp32["parts"]["optimizer_states"]  # fp32 whatever the base
    assert bf16["parts"]["activations"] < fp32["parts"]["activations"]


def test_checkpointing_lowers_the_activations(client, big_model, workers):
    plain = estimate(client, {**BASE, "precision": "bf16"})
    checkpointed = estimate(client, {**BASE, "precision": "bf16", "gradient_checkpointing": True})
    a, b = plain["memory"], checkpointed["memory"]
    assert b["parts"]["activations"] == b["activations_with_checkpointing"] < a["parts"]["activations"] / 4
    assert a["activations_with_checkpointing"] == b["activations_with_checkpointing"]
    assert checkpointed["memory_bytes"] < plain["memory_bytes"]
    # Activations grow with the batch.
    double = estimate(client, {**BASE, "batch_size": 8, "precision": "bf16"})["memory"]
    assert double["parts"]["activations"] == pytest.approx(2 * a["parts"]["activations"], rel=0.01)


@pytest.mark.parametrize("bits, storage, per_weight, share", [("4bit", "nf4", 0.52, 0.55), ("8bit", "int8", 1.0, 0.75)])
def test_quantisation_lowers_the_weights(client, big_model, workers, bits, storage, per_weight, share):
    plain = estimate(client, {**BASE, "precision": "bf16"})["memory"]
    quantized = estimate(client, {**BASE, "precision": "bf16", "quantization": bits})["memory"]
    assert quantized["quantization"] == bits
    assert quantized["parts"]["weights"] < plain["parts"]["weights"] * share
    # The block linears are quantised; embeddings and the LM head (2 × 32000 × 2048) stay unquantised (fp32).
    block_linears = 16 * (2048 * 2048 * 2 + 2048 * 1024 * 2 + 3 * 2048 * 5632)
    assert quantized["weights_by_dtype"][storage] == pytest.approx(block_linears * per_weight, rel=0.02)
    assert quantized["weights_by_dtype"]["fp32"] == pytest.approx(4 * (2 * 32000 * 2048), rel=0.01)


def test_bad_training_settings_are_named(client, big_model, workers):
    res = client.post(f"/api/models/{MODEL_ID}/estimate",
                      json={"task": "causal_lm", "method": LORA, "training": {"quantization": "3bit"}})
    assert res.status_code == 422 and res.json()["detail"][0]["loc"] == ["body", "training", "quantization"]
    res = client.post(f"/api/models/{MODEL_ID}/estimate",
                      json={"task": "causal_lm", "method": LORA, "training": {"batch_size": 0}})
    assert res.status_code == 422 and res.json()["detail"][0]["loc"] == ["body", "training", "batch_size"]


def test_auto_precision_follows_the_workers(client, big_model, workers):
    """auto is bf16 on a GPU worker and fp32 on a CPU one: each worker is judged on its own kind."""
    workers("gpu-small:1", "cuda", 8 * GIB)
    workers("gpu-big:2", "cuda", 80 * GIB)
    workers("cpu:3", "cpu", 64 * GIB)
    workers("gone:4", "cuda", 80 * GIB, seen_ago=timedelta(hours=2))  # not seen in the last hour
    est = estimate(client, {**BASE, "precision": "auto"})
    assert est["memory"]["device"] == "cuda" and est["memory"]["precision"] == "bf16"
    listed = {w["name"]: w for w in est["workers"]}
    assert set(listed) == {"gpu-small:1", "gpu-big:2", "cpu:3"}
    assert listed["gpu-big:2"]["fits"] and not listed["gpu-small:1"]["fits"]
    assert listed["gpu-big:2"]["needed_bytes"] == est["memory_bytes"] == listed["gpu-small:1"]["needed_bytes"]
    assert listed["cpu:3"]["needed_bytes"] > est["memory_bytes"]  # fp32 on the CPU
    assert listed["gpu-big:2"]["usable_bytes"] == int(80 * GIB * 0.9) - GIB


@pytest.fixture
def text_dataset(client):
    csv = "text\n" + "".join(f"good movie {i}\n" for i in range(20))
    return client.post("/api/datasets", files={"file": ("mem.csv", csv.encode())}).json()


def submit(client, dataset_id: int, **training):
    return client.post("/api/runs", json={"dataset_id": dataset_id, "base_model": MODEL_ID, "task": "causal_lm",
                                          "columns": {"text": "text"}, "method": LORA,
                                          "training": {"max_steps": 1, "batch_size": 16, "max_length": 2048,
                                                       "precision": "bf16", **training}})


def drop(client, res) -> None:
    assert res.status_code == 201, res.text
    client.post(f"/api/runs/{res.json()['id']}/cancel")
    client.delete(f"/api/runs/{res.json()['id']}")


def test_a_run_no_recent_worker_could_fit_is_refused(client, big_model, workers, text_dataset):
    workers("gpu-small:1", "cuda", 24 * GIB)
    workers("gpu-smaller:2", "cuda", 16 * GIB)
    workers("gone-big:3", "cuda", 141 * GIB, seen_ago=timedelta(hours=3))
    before = len(client.get("/api/runs").json())
    res = submit(client, text_dataset["id"])
    assert res.status_code == 422, res.text
    [error] = res.json()["detail"]
    assert error["loc"] == ["body", "training", "batch_size"]
    needed = estimate(client, {"batch_size": 16, "max_length": 2048, "precision": "bf16"})["memory_bytes"]
    msg = error["msg"]
    assert f"{needed / GIB:.1f} GiB" in msg and "gpu-small:1" in msg and "24.0 GiB" in msg, msg
    assert "gradient_checkpointing" in msg and "batch_size" in msg, msg
    assert len(client.get("/api/runs").json()) == before
    # What the message suggests makes it fit the 24 GiB worker.
    drop(client, submit(client, text_dataset["id"], gradient_checkpointing=True, batch_size=2))


def test_a_big_enough_worker_lets_the_run_in(client, big_model, workers, text_dataset):
    workers("gpu-small:1", "cuda", 16 * GIB)
    workers("gpu-big:2", "cuda", 141 * GIB)
    drop(client, submit(client, text_dataset["id"]))


def test_without_recent_workers_nothing_is_refused(client, big_model, workers, text_dataset):
    """A user may start the workers after queueing."""
    workers("gone:1", "cuda", 8 * GIB, seen_ago=timedelta(hours=2))
    drop(client, submit(client, text_dataset["id"]))


def test_label_names_set_the_head_and_bad_columns_are_named(client, workers):
    body = {"task": "classification", "num_labels": 2, "method": {"type": "lora"}}
    two = client.post("/api/models/minilm-l6/estimate", json=body).json()
    many = client.post("/api/models/minilm-l6/estimate",
                       json={**body, "columns": {"label_names": [f"class {i}" for i in range(1000)]}}).json()
    assert many["memory_bytes"] > two["memory_bytes"]
    res = client.post("/api/models/minilm-l6/estimate", json={**body, "columns": {"label_names": 5}})
    assert res.status_code == 422 and res.json()["detail"][0]["loc"][:3] == ["body", "columns", "label_names"]
