"""A chat run through a real worker: trained on examples/chat.jsonl (messages column, ChatML on a
tokenizer without a chat template), then answering a plain text and a multi-turn conversation."""
from pathlib import Path

import pytest

from tests.conftest import wait_for_status
from tests.tiny_models import make_tiny_gpt2

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).parents[2] / "examples" / "chat.jsonl"


def test_a_chat_run_trains_and_answers_multi_turn(client, worker_process, tmp_path):
    model = client.post("/api/models", json={"name": "tiny gpt2 chat run",
                                             "source": str(make_tiny_gpt2(tmp_path / "gpt2"))})
    assert model.status_code == 201, model.text
    ds = client.post("/api/datasets", files={"file": ("chat.jsonl", SAMPLE.read_bytes())}).json()
    res = client.post("/api/runs", json={
        "name": "chat", "dataset_id": ds["id"], "base_model": model.json()["id"], "task": "causal_lm",
        "eval_fraction": 0.1, "columns": {"messages": "messages"}, "method": {"type": "lora", "r": 4},
        "training": {"learning_rate": 0.01, "batch_size": 8, "max_steps": 4, "eval_every": 4}})
    assert res.status_code == 201, res.text
    run = wait_for_status(lambda: client.get(f"/api/runs/{res.json()['id']}").json(), ("succeeded", "failed"))
    assert run["status"] == "succeeded", f"{run['error']}\n{run['traceback']}"
    assert run["summary"]["eval"]["loss"] > 0

    conversation = [{"role": "system", "content": "You are a concise assistant."},
                    {"role": "user", "content": "What is the capital of Japan?"},
                    {"role": "assistant", "content": "The capital of Japan is Tokyo."},
                    {"role": "user", "content": "And how many letters does that name have?"}]
    res = client.post(f"/api/runs/{run['id']}/predict",
                      json={"inputs": ["What is 6 times 6?", conversation], "max_new_tokens": 8, "compare_base": True})
    assert res.status_code == 200, res.text
    out = res.json()
    for outputs in (out["outputs"], out["base_outputs"]):
        assert len(outputs) == 2 and all(isinstance(o["text"], str) for o in outputs)
        assert all("<|im_end|>" not in o["text"] and "im_start" not in o["text"] for o in outputs)

    bad = client.post(f"/api/runs/{run['id']}/predict", json={"inputs": [[{"role": "robot", "content": "x"}]]})
    assert bad.status_code == 422
