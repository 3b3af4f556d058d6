"""training.quantization at POST /api/runs: the methods whose spec has no quantized_base, LoRA's
weight-rewriting inits, an already quantised checkpoint and a fleet of workers that cannot run it are
refused with a 422 on the field; GET /api/methods says which methods take a quantised base."""
from datetime import datetime, timedelta, timezone

import pytest

from app.db import session_scope
from app.methods import all_specs
from app.runs.checks import training_problems, model_problems
from app.runs.schemas import RunCreate
from app.worker_status import service as worker_status
from app.worker_status.models import Worker


@pytest.fixture
def dataset(client):
    csv = "sentence,label\n" + "".join(f"good movie {i},pos\nbad film {i},neg\n" for i in range(10))
    return client.post("/api/datasets", files={"file": ("quant.csv", csv.encode())}).json()


@pytest.fixture
def no_workers(app):
    def clear():
        with session_scope() as s:
            s.query(Worker).delete()
            s.commit()
    clear()
    yield
    clear()


def body(dataset_id, method, quantization, **training):
    return {"dataset_id": dataset_id, "base_model": "minilm-l6", "task": "classification",
            "columns": {"text": "sentence", "label": "label"}, "method": method,
            "training": {"max_steps": 2, "quantization": quantization, **training}}


def refused(res) -> dict[tuple, str]:
    assert res.status_code == 422, res.text
    return {tuple(e["loc"]): e["msg"] for e in res.json()["detail"]}


def test_methods_say_whether_they_take_a_quantised_base(client):
    flags = {m["name"]: m["quantized_base"] for m in client.get("/api/methods").json()}
    assert flags["lora"] and flags["prompt"] and flags["ia3"] and flags["adapter_fusion"]
    assert not flags["full"] and not flags["freeze"]


@pytest.mark.parametrize("method", [{"type": "full"}, {"type": "freeze", "trainable_layers": 1}])
def test_methods_that_train_the_base_weights_are_refused(client, dataset, no_workers, method):
    before = len(client.get("/api/runs").json())
    problems = refused(client.post("/api/runs", json=body(dataset["id"], method, "4bit")))
    msg = problems[("body", "training", "quantization")]
    assert f"(method {method['type']})" in msg and "cannot train on a quantised base" in msg
    assert len(client.get("/api/runs").json()) == before


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_lora_inits_that_rewrite_the_base_are_refused(client, dataset, no_workers, init):
    problems = refused(client.post("/api/runs", json=body(dataset["id"], {"type": "lora", "init": init}, "8bit")))
    assert f"init = {init} rewrites the base weights" in problems[("body", "training", "quantization")]


def test_unknown_kinds_are_refused(client, dataset):
    problems = refused(client.post("/api/runs", json=body(dataset["id"], {"type": "lora"}, "2bit")))
    assert ("body", "training", "quantization") in problems


def test_a_quantised_lora_run_is_queued(client, dataset, no_workers):
    res = client.post("/api/runs", json=body(dataset["id"], {"type": "lora"}, "4bit"))
    assert res.status_code == 201, res.text
    assert res.json()["config"]["training"]["quantization"] == "4bit"
    plain = client.post("/api/runs", json=body(dataset["id"], {"type": "full"}, None))
    assert plain.status_code == 201 and plain.json()["config"]["training"]["quantization"] is None
    for run in (res.json(), plain.json()):
        client.post(f"/api/runs/{run['id']}/cancel")
        client.delete(f"/api/runs/{run['id']}")


def _worker(name: str, kinds: list[str] | None, seen_ago: timedelta = timedelta(0)) -> None:
    device = {"kind": "cpu", "name": "test cpu"} | ({"quantization": kinds} if kinds is not None else {})
    with session_scope() as s:
        s.add(Worker(name=name, device=device, memory_bytes=64 << 30,  # room for the runs: only quantisation decides here
                     last_seen=datetime.now(timezone.utc) - seen_ago))
        s.commit()


def test_refused_when_no_recent_worker_can_quantise(client, dataset, no_workers):
    _worker("old:1", ["4bit", "8bit"], seen_ago=timedelta(hours=3))  # gone: does not count
    _worker("nobnb:2", [])
    problems = refused(client.post("/api/runs", json=body(dataset["id"], {"type": "lora"}, "4bit")))
    msg = problems[("body", "training", "quantization")]
    assert "no worker seen in the last hour can load a 4bit base" in msg and "nobnb:2" in msg and "old:1" not in msg
    _worker("only8:3", ["8bit"])
    assert refused(client.post("/api/runs", json=body(dataset["id"], {"type": "lora"}, "4bit")))
    res = client.post("/api/runs", json=body(dataset["id"], {"type": "lora"}, "8bit"))
    assert res.status_code == 201, res.text
    client.post(f"/api/runs/{res.json()['id']}/cancel")
    client.delete(f"/api/runs/{res.json()['id']}")


def test_workers_that_do_not_report_kinds_do_not_refuse(app, no_workers):
    _worker("older-version:4", None)
    with session_scope() as s:
        assert worker_status.quantization_problem(s, "4bit") is None
    _worker("nobnb:5", [])
    with session_scope() as s:
        assert "nobnb:5" in worker_status.quantization_problem(s, "4bit")


def test_an_already_quantised_checkpoint_is_refused():
    config = RunCreate.model_validate({
        "dataset_id": 1, "base_model": "llama-gptq", "task": "causal_lm", "columns": {"text": "text"},
        "method": {"type": "lora"}, "training": {"quantization": "4bit"}})
    facts = {"model_type": "llama", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "quantized": "gptq"}
    [problem] = [p for p in model_problems(config, facts, max_trainable=None) if p.loc == ("training", "quantization")]
    assert "already quantised (gptq)" in problem.msg
    assert not [p for p in model_problems(config, {**facts, "quantized": None} | {}, max_trainable=None)
                if p.loc == ("training", "quantization") and "gptq" in p.msg]


def test_every_spec_flag_matches_the_check():
    for spec in all_specs():
        if spec.name == "adapter_fusion":
            continue  # needs trained adapter runs in its config
        config = RunCreate.model_validate({
            "dataset_id": 1, "base_model": "m", "task": spec.tasks[0],
            "columns": {"text": "t", "label": "l"} if spec.tasks[0] == "classification" else {"text": "t"},
            "method": spec.defaults() if len(spec.defaults()) > 1 else {"type": spec.name},
            "training": {"quantization": "4bit"}})
        refused_here = any(p.loc == ("training", "quantization") for p in training_problems(config))
        assert refused_here is (not spec.quantized_base), spec.name
