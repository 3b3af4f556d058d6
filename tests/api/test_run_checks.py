"""What the server can know is impossible or absurd is refused at POST /api/runs (and for each run of
an experiment) with a 422 naming the field, instead of queueing a run that fails on the worker."""
import pytest

from app.config import get_settings


@pytest.fixture
def dataset(client):
    csv = "sentence,label\n" + "".join(f"good movie {i},pos\nbad film {i},neg\n" for i in range(10))
    return client.post("/api/datasets", files={"file": ("checks.csv", csv.encode())}).json()


def body(dataset_id, method, **over):
    return {"dataset_id": dataset_id, "base_model": "minilm-l6", "task": "classification",
            "columns": {"text": "sentence", "label": "label"}, "method": method, "training": {"max_steps": 2}, **over}


def refused(res) -> dict[tuple, str]:
    assert res.status_code == 422, res.text
    return {tuple(e["loc"]): e["msg"] for e in res.json()["detail"]}


# MiniLM holds 512 positions, d = 384, 6 BERT layers.
@pytest.mark.parametrize("method, over, loc, words", [
    ({"type": "prompt", "num_virtual_tokens": 512}, {}, ("method", "prompt", "num_virtual_tokens"), "no room for text"),
    ({"type": "prefix", "num_virtual_tokens": 510}, {}, ("method", "prefix", "num_virtual_tokens"), "no room for text"),
    ({"type": "ptuning", "num_virtual_tokens": 506}, {}, ("method", "ptuning", "num_virtual_tokens"), "512 positions"),
    ({"type": "lora", "target_modules": ["query", "q_proj"]}, {}, ("method", "lora", "target_modules"),
     "q_proj not found in the model; its linear layers are named: dense, key, query, value"),
    ({"type": "adapter", "reduction_factor": 1024}, {}, ("method", "adapter", "reduction_factor"), "no bottleneck"),
    ({"type": "lora"}, {"task": "causal_lm", "columns": {"text": "sentence"}}, ("task",), "needs a decoder"),
    ({"type": "ptuning", "encoder": "lstm", "encoder_hidden_size": 16384}, {}, ("method", "ptuning"),
     "PEFTLAB_MAX_TRAINABLE_PARAMS"),
    ({"type": "lora"}, {"eval_fraction": 0.01}, ("eval_fraction",), "leaves no eval rows"),
    ({"type": "freeze", "trainable_layers": 7}, {}, ("method", "freeze", "trainable_layers"), "has 6 layers"),
])
def test_impossible_runs_are_refused_before_queueing(client, dataset, method, over, loc, words):
    before = len(client.get("/api/runs").json())
    problems = refused(client.post("/api/runs", json=body(dataset["id"], method, **over)))
    assert words in problems.get(("body", *loc), ""), problems
    assert len(client.get("/api/runs").json()) == before


def test_the_trainable_limit_is_a_setting(client, dataset, monkeypatch):
    lora = {"type": "lora"}  # 2·6·2·384·8 + head = 74,498 on MiniLM
    monkeypatch.setattr(get_settings(), "max_trainable_params", 70_000)
    problems = refused(client.post("/api/runs", json=body(dataset["id"], lora)))
    assert "74,498" in problems[("body", "method", "lora")] and "70,000" in problems[("body", "method", "lora")]
    monkeypatch.setattr(get_settings(), "max_trainable_params", 80_000)
    res = client.post("/api/runs", json=body(dataset["id"], lora))
    assert res.status_code == 201, res.text
    client.post(f"/api/runs/{res.json()['id']}/cancel")
    client.delete(f"/api/runs/{res.json()['id']}")


def test_a_possible_edge_is_accepted(client, dataset):
    """504 virtual tokens leave MiniLM 8 positions for text: short, but it works."""
    res = client.post("/api/runs", json=body(dataset["id"], {"type": "prompt", "num_virtual_tokens": 504}))
    assert res.status_code == 201, res.text
    assert res.json()["config"]["method"]["num_virtual_tokens"] == 504
    client.post(f"/api/runs/{res.json()['id']}/cancel")
    client.delete(f"/api/runs/{res.json()['id']}")


def test_experiment_runs_get_the_same_checks(client, dataset):
    grid = {"kind": "grid", "name": "tokens", "grid": {"method.num_virtual_tokens": [10, 510]},
            "base": body(dataset["id"], {"type": "prompt"})}
    res = client.post("/api/experiments", json=grid)
    assert res.status_code == 422, res.text
    [error] = res.json()["detail"]
    assert error["loc"] == ["body", "runs", 1, "method", "prompt", "num_virtual_tokens"]
    assert "no room for text" in error["msg"]


def test_methods_are_listed_from_the_registry(client):
    methods = client.get("/api/methods").json()
    by_name = {m["name"]: m for m in methods}
    assert {"lora", "adapter", "adapter_fusion", "prefix", "ptuning", "prompt", "full"} <= set(by_name)
    lora = by_name["lora"]
    assert lora["defaults"] == {"type": "lora", "r": 8, "alpha": 16.0, "dropout": 0.1, "target_modules": None,
                                "use_dora": False, "use_rslora": False, "init": None}
    r = lora["settings_schema"]["properties"]["r"]
    assert (r["default"], r["minimum"], r["maximum"]) == (8, 1, 1024) and r["description"]
    assert by_name["prompt"]["learning_rate"] > by_name["lora"]["learning_rate"] > by_name["full"]["learning_rate"]
    assert by_name["adapter_fusion"]["presets"] is False


@pytest.mark.parametrize("training", [None, {"max_steps": 2}])
def test_a_run_without_a_learning_rate_gets_its_methods_preset(client, dataset, training):
    presets = {m["name"]: m["learning_rate"] for m in client.get("/api/methods").json()}
    for kind in ("prompt", "lora", "full"):
        config = body(dataset["id"], {"type": kind})
        if training is None:
            del config["training"]
        else:
            config["training"] = training
        res = client.post("/api/runs", json=config)
        assert res.status_code == 201, res.text
        assert res.json()["config"]["training"]["learning_rate"] == presets[kind]
        client.post(f"/api/runs/{res.json()['id']}/cancel")
        client.delete(f"/api/runs/{res.json()['id']}")
    given = body(dataset["id"], {"type": "prompt"}, training={"learning_rate": 0.001})
    res = client.post("/api/runs", json=given)
    assert res.json()["config"]["training"]["learning_rate"] == 0.001
    client.post(f"/api/runs/{res.json()['id']}/cancel")
    client.delete(f"/api/runs/{res.json()['id']}")
