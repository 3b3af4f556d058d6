"""Chat runs: a chat column that is not a list of role/content turns is refused at POST /api/runs
(from the dataset's stored preview rows) with a 422 naming columns.messages, before queueing."""
import json
from pathlib import Path

import pytest

from tests.tiny_models import make_tiny_gpt2

SAMPLE = Path(__file__).parents[2] / "examples" / "chat.jsonl"


@pytest.fixture(scope="module")
def gpt2_id(app, admin_account, tmp_path_factory):
    from fastapi.testclient import TestClient

    with TestClient(app, headers=admin_account.headers) as c:
        res = c.post("/api/models", json={"name": "tiny gpt2 chat checks",
                                          "source": str(make_tiny_gpt2(tmp_path_factory.mktemp("chat-gpt2")))})
        assert res.status_code == 201, res.text
        return res.json()["id"]


def upload(client, name: str, rows: list[dict]) -> int:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    res = client.post("/api/datasets", files={"file": (name, data)})
    assert res.status_code == 201, res.text
    return res.json()["id"]


def body(dataset_id, model, columns, **over):
    return {"dataset_id": dataset_id, "base_model": model, "task": "causal_lm", "eval_fraction": 0,
            "columns": columns, "method": {"type": "lora"}, "training": {"max_steps": 1}, **over}


GOOD = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


@pytest.mark.parametrize("cell, words", [
    ("hello there", "holds text, not a list of {role, content} turns"),
    ([{"role": "user", "content": "hi"}], "no assistant turn"),
    ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}], "the role 'bot'"),
    ([{"speaker": "user", "text": "hi"}], "has no 'role'"),
])
def test_bad_chat_columns_are_refused_before_queueing(client, gpt2_id, cell, words):
    rows = [{"messages": GOOD}] * 3 + [{"messages": cell}]
    ds = upload(client, "bad-chat.jsonl", rows)
    before = len(client.get("/api/runs").json())
    res = client.post("/api/runs", json=body(ds, gpt2_id, {"messages": "messages"}))
    assert res.status_code == 422, res.text
    problems = {tuple(e["loc"]): e["msg"] for e in res.json()["detail"]}
    msg = problems.get(("body", "columns", "messages"), "")
    assert words in msg and "row 3" in msg, problems
    assert len(client.get("/api/runs").json()) == before


def test_chat_columns_need_a_causal_lm_run_and_their_parts(client, gpt2_id):
    ds = upload(client, "chat-ok.jsonl", [{"messages": GOOD}] * 4)
    res = client.post("/api/runs", json=body(ds, gpt2_id, {"text": "messages", "label": "messages",
                                                           "messages": "messages"}, task="classification"))
    assert res.status_code == 422 and "for causal_lm runs" in res.text
    res = client.post("/api/runs", json=body(ds, gpt2_id, {"prompt": "messages", "input": "messages",
                                                           "response": "messages"}))
    assert res.status_code == 422 and "needs columns.prompt, columns.response and columns.chat_template" in res.text
    res = client.post("/api/runs", json=body(ds, gpt2_id, {"messages": "messages", "chat_template": "jinja"}))
    assert res.status_code == 422 and "chat_template" in res.text


def test_the_sample_chat_dataset_and_sharegpt_are_accepted(client, gpt2_id):
    sample = client.post("/api/datasets", files={"file": ("chat.jsonl", SAMPLE.read_bytes())}).json()["id"]
    sharegpt = upload(client, "sharegpt.jsonl", [{"conversations": [{"from": "human", "value": "hi"},
                                                                    {"from": "gpt", "value": "hello"}]}] * 4)
    for ds, columns in ((sample, {"messages": "messages", "chat_template": "chatml"}),
                        (sharegpt, {"messages": "conversations"})):
        res = client.post("/api/runs", json=body(ds, gpt2_id, columns))
        assert res.status_code == 201, res.text
        client.post(f"/api/runs/{res.json()['id']}/cancel")
        client.delete(f"/api/runs/{res.json()['id']}")
