"""Experiments: groups of runs ("methods" or "grid"), validated all or nothing; queue order and moves."""
import pytest

from app.db import session_scope
from app.experiments.plans import MAX_RUNS, METHOD_PRESETS
from app.runs import lifecycle
from app.runs.models import Run
from tests.api.conftest import upload_reviews


@pytest.fixture
def dataset(client):
    return upload_reviews(client, "exp-reviews.csv")


def methods_body(dataset_id, **over):
    body = {"kind": "methods", "name": "every method", "dataset_id": dataset_id, "base_model": "minilm-l6",
            "columns": {"text": "sentence", "label": "label"}, "methods": ["lora", "prompt", "full"],
            "training": {"max_steps": 5, "batch_size": 4}}
    body.update(over)
    return body


def grid_body(dataset_id, grid, **over):
    base = {"dataset_id": dataset_id, "base_model": "minilm-l6", "columns": {"text": "sentence", "label": "label"},
            "method": {"type": "lora"}, "training": {"max_steps": 5}}
    return {"kind": "grid", "name": "lr x r", "base": base, "grid": grid, **over}


def _create(client, made, body) -> dict:
    res = client.post("/api/experiments", json=body)
    assert res.status_code == 201, res.text
    made.append(res.json()["id"])
    return res.json()


def _counts(client) -> tuple[int, int]:
    return len(client.get("/api/runs").json()), len(client.get("/api/experiments").json())


def test_methods_experiment_runs_each_method_with_its_defaults(client, dataset, made):
    x = _create(client, made, methods_body(dataset["id"]))
    assert x["kind"] == "methods" and x["run_count"] == 3 and x["statuses"] == {"queued": 3}
    by_method = {r["method"]: r for r in x["runs"]}
    assert set(by_method) == {"lora", "prompt", "full"}
    for method, run in by_method.items():
        settings, learning_rate = METHOD_PRESETS[method]
        config = run["config"]
        assert run["status"] == "queued" and run["name"] == f"every method · {method}"
        assert {k: config["method"][k] for k in settings} == settings
        assert config["training"]["learning_rate"] == learning_rate
        assert config["training"]["max_steps"] == 5 and config["training"]["batch_size"] == 4
        assert config["dataset_id"] == dataset["id"] and config["columns"] == {
            "text": "sentence", "label": "label", "text_pair": None, "prompt": None, "response": None, "label_names": None,
            "messages": None, "input": None, "chat_template": None}
        assert isinstance(run["queue_position"], int)
    # Prompt-family methods learn fastest, full fine-tuning slowest.
    assert by_method["prompt"]["config"]["training"]["learning_rate"] > by_method["lora"]["config"]["training"]["learning_rate"] \
        > by_method["full"]["config"]["training"]["learning_rate"]
    assert client.get(f"/api/experiments/{x['id']}").json()["runs"] == x["runs"]
    assert x["id"] in [e["id"] for e in client.get("/api/experiments").json()]


def test_a_learning_rate_given_applies_to_every_method(client, dataset, made):
    x = _create(client, made, methods_body(dataset["id"], methods=["lora", "adapter"],
                                           training={"learning_rate": 0.002, "max_steps": 3}))
    assert {r["config"]["training"]["learning_rate"] for r in x["runs"]} == {0.002}


def test_grid_makes_one_run_per_combination(client, dataset, made):
    x = _create(client, made, grid_body(dataset["id"], {"training.learning_rate": [1e-4, 5e-4], "method.r": [4, 8]}))
    combos = sorted((r["config"]["training"]["learning_rate"], r["config"]["method"]["r"]) for r in x["runs"])
    assert combos == [(1e-4, 4), (1e-4, 8), (5e-4, 4), (5e-4, 8)]
    for run in x["runs"]:
        assert run["method"] == "lora" and run["config"]["training"]["max_steps"] == 5
        assert run["name"].startswith("lr x r · training.learning_rate=")
    assert x["spec"]["grid"] == {"training.learning_rate": [1e-4, 5e-4], "method.r": [4, 8]}


def test_an_invalid_combination_refuses_the_whole_grid(client, dataset):
    before = _counts(client)
    res = client.post("/api/experiments", json=grid_body(dataset["id"], {"method.r": [4, 0], "training.seed": [1, 2]}))
    assert res.status_code == 422, res.text
    errors = res.json()["detail"]
    assert {tuple(e["loc"][:3]) for e in errors} == {("body", "runs", 2), ("body", "runs", 3)}
    assert errors[0]["loc"][3:] == ["method", "lora", "r"] and "method.r=0" in errors[0]["msg"]
    assert _counts(client) == before


@pytest.mark.parametrize("over, needle", [
    ({"columns": {"text": "sentence", "label": "nope"}}, "'nope' is not in the dataset"),
    ({"base_model": "no-such-model"}, "not registered"),
    ({"training": {"batch_size": 0}}, "training.batch_size"),
    ({"methods": ["lora", "lora"]}, "must not repeat"),
    ({"methods": ["adapter_fusion"]}, "methods"),
])
def test_methods_experiments_are_validated_like_runs(client, dataset, over, needle):
    before = _counts(client)
    res = client.post("/api/experiments", json=methods_body(dataset["id"], **over))
    assert res.status_code == 422 and needle in res.text, res.text
    assert _counts(client) == before


def test_grid_caps_and_key_checks(client, dataset):
    big = {"training.seed": list(range(9)), "method.r": list(range(1, 9))}  # 72 runs
    res = client.post("/api/experiments", json=grid_body(dataset["id"], big))
    assert res.status_code == 422 and f"at most {MAX_RUNS}" in res.text
    res = client.post("/api/experiments", json=grid_body(dataset["id"], {"training.seed": list(range(MAX_RUNS + 1))}))
    assert res.status_code == 422
    for grid, needle in (({"Training.LR": [1]}, "pattern"), ({"training.max_steps.x": [1]}, "not an object"),
                         ({"method.r": [4, 4]}, "repeat"), ({"name": ["a", "b"]}, "run names"), ({}, "grid")):
        res = client.post("/api/experiments", json=grid_body(dataset["id"], grid))
        assert res.status_code == 422 and needle in res.text, (grid, res.text)
    res = client.post("/api/experiments", json={"kind": "sweep", "name": "x"})
    assert res.status_code == 422


def test_another_users_experiment_is_not_found(client, client_as, dataset, made):
    x = _create(client, made, methods_body(dataset["id"], methods=["lora"]))
    bob = client_as("bob-exp")
    assert bob.get(f"/api/experiments/{x['id']}").status_code == 404
    assert bob.delete(f"/api/experiments/{x['id']}").status_code == 404
    assert x["id"] not in [e["id"] for e in bob.get("/api/experiments").json()]
    assert bob.post(f"/api/runs/{x['runs'][0]['id']}/move", json={"position": "top"}).status_code == 404
    # Bob cannot launch one on the admin's dataset either: it reads as missing.
    res = bob.post("/api/experiments", json=methods_body(dataset["id"]))
    assert res.status_code == 422 and "does not exist" in res.text


def _queue(client, experiment_id) -> list[int]:
    runs = client.get(f"/api/experiments/{experiment_id}").json()["runs"]
    return [r["id"] for r in sorted((r for r in runs if r["queue_position"]), key=lambda r: r["queue_position"])]


def test_move_reorders_queued_runs(client, dataset, made):
    x = _create(client, made, methods_body(dataset["id"], methods=["lora", "adapter", "prefix", "full"]))
    a, b, c, d = [r["id"] for r in x["runs"]]
    assert _queue(client, x["id"]) == [a, b, c, d]  # id order by default

    res = client.post(f"/api/runs/{d}/move", json={"position": "top"})
    assert res.status_code == 200 and res.json()["queue_position"] == 1 and res.json()["queue_length"] >= 4
    assert _queue(client, x["id"]) == [d, a, b, c]
    client.post(f"/api/runs/{a}/move", json={"position": "down"})
    assert _queue(client, x["id"]) == [d, b, a, c]
    client.post(f"/api/runs/{c}/move", json={"position": "up"})
    assert _queue(client, x["id"]) == [d, b, c, a]
    client.post(f"/api/runs/{d}/move", json={"position": "bottom"})
    assert _queue(client, x["id"]) == [b, c, a, d]
    assert client.post(f"/api/runs/{b}/move", json={"position": "top"}).json()["queue_position"] == 1
    assert client.post(f"/api/runs/{b}/move", json={"position": "up"}).json()["queue_position"] == 1  # stays first

    # A run queued after the moves goes behind all of them.
    y = _create(client, made, methods_body(dataset["id"], methods=["lora"]))
    positions = {r["id"]: r["queue_position"] for r in client.get(f"/api/experiments/{x['id']}").json()["runs"]}
    assert y["runs"][0]["queue_position"] > max(positions.values())

    client.post(f"/api/runs/{c}/cancel")
    res = client.post(f"/api/runs/{c}/move", json={"position": "top"})
    assert res.status_code == 409 and "not queued" in res.json()["detail"]
    assert client.post(f"/api/runs/{a}/move", json={"position": "sideways"}).status_code == 422
    assert client.get(f"/api/experiments/{x['id']}").json()["runs"][2]["queue_position"] is None


def test_claim_next_takes_the_head_of_the_queue_and_skips_unsent_runs(client, dataset, made):
    x = _create(client, made, methods_body(dataset["id"], methods=["lora", "full"]))
    first, second = [r["id"] for r in x["runs"]]
    with session_scope() as s:
        project = s.get(Run, first).project_id
        unsent = Run(name="never sent", status="queued", config={}, summary={}, dataset_id=dataset["id"],
                     base_model="minilm-l6", method="lora", task="classification", project_id=project)
        s.add(unsent)
        s.flush()
        unsent_id = unsent.id
    try:
        client.post(f"/api/runs/{second}/move", json={"position": "top"})
        client.post(f"/api/runs/{unsent_id}/move", json={"position": "top"})  # queue: unsent, second, first, …
        with session_scope() as s:
            # A message for `first` starts the head of the queue; the unsent row has no message of its own.
            assert lifecycle.claim_next(s, "w-test", 30, hint=first) == second
            assert lifecycle.claim_next(s, "w-test", 30, hint=unsent_id) == unsent_id  # its own message
            for run_id in (second, unsent_id):
                assert lifecycle.finish(s, run_id, "w-test", "cancelled")
    finally:
        client.delete(f"/api/runs/{unsent_id}")


def test_delete_refuses_while_a_run_runs_then_removes_the_runs(client, dataset, made):
    x = _create(client, made, methods_body(dataset["id"], methods=["lora", "prompt"]))
    running, queued = [r["id"] for r in x["runs"]]
    with session_scope() as s:
        assert lifecycle.claim(s, running, "w-test", 30)
    res = client.delete(f"/api/experiments/{x['id']}")
    assert res.status_code == 409 and f"#{running}" in res.json()["detail"]
    assert client.get(f"/api/runs/{queued}").json()["status"] == "queued"  # nothing was touched
    with session_scope() as s:
        assert lifecycle.finish(s, running, "w-test", "succeeded")
    assert client.delete(f"/api/experiments/{x['id']}").status_code == 204
    made.remove(x["id"])
    for run_id in (running, queued):
        assert client.get(f"/api/runs/{run_id}").status_code == 404
    assert client.get(f"/api/experiments/{x['id']}").status_code == 404


def test_an_unknown_grid_key_is_reported_once_not_once_per_run(client, dataset):
    grid = {"training.learnin_rate": [1e-4, 5e-4, 1e-3], "method.r": [4, 8]}  # a typo: 6 runs, one mistake
    res = client.post("/api/experiments", json=grid_body(dataset["id"], grid))
    assert res.status_code == 422, res.text
    errors = res.json()["detail"]
    assert len(errors) == 1, errors
    assert errors[0]["loc"] == ["body", "grid", "training.learnin_rate"]
    assert errors[0]["msg"].startswith("every run: training.learnin_rate")
    # A bad method setting in every combination is said once too, for its grid key.
    res = client.post("/api/experiments", json=grid_body(dataset["id"], {"method.r": [0], "training.seed": [1, 2]}))
    errors = res.json()["detail"]
    assert [e["loc"] for e in errors] == [["body", "grid", "method.r"]], errors
