"""Hostile request bodies, ids and headers get a 4xx that names the problem (never a 500), every
answer carries the security headers, and secrets are never cached."""
import json

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.security_headers import HEADERS

HUGE = 2**63  # past any integer a database holds
PAST_INT4 = 2**31  # one past the largest id of the tables' INTEGER columns on PostgreSQL
NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def dataset_id(app, admin_account) -> int:
    csv = "sentence,label\n" + "".join(f"good movie {i},pos\nbad film {i},neg\n" for i in range(10))
    with TestClient(app, headers=admin_account.headers) as c:
        res = c.post("/api/datasets", files={"file": ("hostile.csv", csv.encode())})
        assert res.status_code == 201, res.text
        return res.json()["id"]


def strict_json(res):
    """The body as JSON, refusing the NaN / Infinity tokens that Python's json writes but JSON lacks."""
    def refuse(token):
        raise AssertionError(f"not JSON: {token} in {res.text[:300]}")
    return json.loads(res.text, parse_constant=refuse)


def post_json(client, url: str, body) -> "httpx.Response":  # noqa: F821
    # json.dumps writes NaN and Infinity as Python's json module reads them (and so does the server).
    return client.post(url, content=json.dumps(body), headers={"Content-Type": "application/json"})


def config(dataset: int, **over) -> dict:
    body = {"dataset_id": dataset, "base_model": "minilm-l6", "task": "classification",
            "columns": {"text": "sentence", "label": "label"}, "method": {"type": "lora"},
            "training": {"max_steps": 5, "batch_size": 4}}
    body.update(over)
    return body


def training(**over) -> dict:
    return {"training": {"max_steps": 5, "batch_size": 4, **over}}


# (name, changes to a valid config, the loc the 422 must name)
BAD_CONFIGS = [
    ("NaN learning rate", training(learning_rate=NAN), ["body", "training", "learning_rate"]),
    ("Infinity learning rate", training(learning_rate=INF), ["body", "training", "learning_rate"]),
    ("Infinity epochs", training(epochs=INF), ["body", "training", "epochs"]),
    ("NaN epochs", training(epochs=NAN), ["body", "training", "epochs"]),
    ("-Infinity weight decay", training(weight_decay=-INF), ["body", "training", "weight_decay"]),
    ("NaN eval fraction", {"eval_fraction": NAN}, ["body", "eval_fraction"]),
    ("NaN LoRA dropout", {"method": {"type": "lora", "dropout": NAN}}, ["body", "method", "lora", "dropout"]),
    ("dataset id 2**63", {"dataset_id": HUGE}, ["body", "dataset_id"]),
    ("dataset id 2**64 + 1", {"dataset_id": 2**64 + 1}, ["body", "dataset_id"]),
    ("dataset id 2**31", {"dataset_id": PAST_INT4}, ["body", "dataset_id"]),
    ("eval dataset id 2**63", {"eval_dataset_id": HUGE}, ["body", "eval_dataset_id"]),
    ("fused run id 2**63", {"method": {"type": "adapter_fusion", "adapter_run_ids": [1, HUGE]}},
     ["body", "method", "adapter_fusion", "adapter_run_ids", 1]),
    ("dataset id 0", {"dataset_id": 0}, ["body", "dataset_id"]),
    ("bool as dataset id", {"dataset_id": True}, ["body", "dataset_id"]),
    ("string as dataset id", {"dataset_id": "1"}, ["body", "dataset_id"]),
    ("float as dataset id", {"dataset_id": 1.0}, ["body", "dataset_id"]),
    ("string as LoRA rank", {"method": {"type": "lora", "r": "8"}}, ["body", "method", "lora", "r"]),
    ("bool as LoRA rank", {"method": {"type": "lora", "r": True}}, ["body", "method", "lora", "r"]),
    ("string as batch size", training(batch_size="32"), ["body", "training", "batch_size"]),
    ("negative batch size", training(batch_size=-4), ["body", "training", "batch_size"]),
    ("max steps 2**70", training(max_steps=2**70), ["body", "training", "max_steps"]),
    ("negative seed", training(seed=-1), ["body", "training", "seed"]),
    ("string as learning rate", training(learning_rate="0.001"), ["body", "training", "learning_rate"]),
    ("bool as projection's hidden size", {"method": {"type": "prefix", "encoder_hidden_size": False}},
     ["body", "method", "prefix", "encoder_hidden_size"]),
    ("unknown method type", {"method": {"type": "magic"}}, ["body", "method"]),
    ("unknown top-level key", {"gpu": 1}, ["body", "gpu"]),
    ("unknown method key", {"method": {"type": "lora", "rank": 8}}, ["body", "method", "lora", "rank"]),
    ("unknown task", {"task": "regression"}, ["body", "task"]),
    ("number as column name", {"columns": {"text": 123, "label": "label"}}, ["body", "columns", "text"]),
    ("string as target modules", {"method": {"type": "lora", "target_modules": "query"}},
     ["body", "method", "lora", "target_modules"]),
    ("training as a string", {"training": "fast"}, ["body", "training"]),
    ("null dataset id", {"dataset_id": None}, ["body", "dataset_id"]),
    ("lone surrogate as name", {"name": "\ud800"}, ["body", "name"]),
]


@pytest.mark.parametrize("override, loc", [pytest.param(o, loc, id=name) for name, o, loc in BAD_CONFIGS])
def test_bad_run_config_is_refused_naming_the_field(client, dataset_id, override, loc):
    before = len(client.get("/api/runs").json())
    res = post_json(client, "/api/runs", config(dataset_id, **override))
    assert res.status_code == 422, res.text
    detail = strict_json(res)["detail"]
    assert loc in [e["loc"] for e in detail], detail
    assert all(e["msg"] for e in detail)
    assert len(client.get("/api/runs").json()) == before


def test_bad_configs_are_many_and_distinct():
    assert len(BAD_CONFIGS) >= 20 and len({name for name, _, _ in BAD_CONFIGS}) == len(BAD_CONFIGS)


def test_strictness_leaves_json_numbers_for_float_fields(client, dataset_id):
    """Integers are numbers: `epochs: 1` and `learning_rate: 1` stay valid, as the API document shows."""
    res = post_json(client, "/api/runs", config(dataset_id, **training(epochs=1, learning_rate=1, warmup_ratio=0)))
    assert res.status_code == 201, res.text
    run = res.json()
    try:
        assert run["config"]["training"]["epochs"] == 1
        # What the worker reads back parses again (it validates the stored config once more).
        from app.runs.schemas import RunCreate

        assert RunCreate.model_validate(run["config"]).training.learning_rate == 1
    finally:
        client.post(f"/api/runs/{run['id']}/cancel")
        client.delete(f"/api/runs/{run['id']}")


@pytest.mark.parametrize("url, body, loc", [
    ("/api/models/minilm-l6/estimate", {"num_labels": INF, "method": {"type": "lora"}}, ["body", "num_labels"]),
    ("/api/models/minilm-l6/estimate", {"method": {"type": "lora", "alpha": NAN}}, ["body", "method", "lora", "alpha"]),
    ("/api/tokens", {"name": NAN}, ["body", "name"]),
    ("/api/projects", {"name": "\udfff"}, ["body", "name"]),
    ("/api/experiments", {"kind": "methods", "name": "x", "dataset_id": HUGE, "columns": {"text": "a", "label": "b"},
                          "methods": ["lora"]}, ["body", "methods", "dataset_id"]),
    ("/api/experiments", {"kind": "methods", "name": "x", "dataset_id": True, "columns": {"text": "a", "label": "b"},
                          "methods": ["lora"]}, ["body", "methods", "dataset_id"]),
])
def test_other_bodies_with_nan_huge_or_broken_values(client, url, body, loc):
    res = post_json(client, url, body)
    assert res.status_code == 422, res.text
    assert loc in [e["loc"] for e in strict_json(res)["detail"]]


def test_experiment_nan_learning_rate_names_the_run_and_field(client, dataset_id):
    body = {"kind": "methods", "name": "nan", "dataset_id": dataset_id, "columns": {"text": "sentence", "label": "label"},
            "methods": ["lora"], "training": {"learning_rate": NAN}}
    res = post_json(client, "/api/experiments", body)
    assert res.status_code == 422, res.text
    assert ["body", "runs", 0, "training", "learning_rate"] in [e["loc"] for e in strict_json(res)["detail"]]


def test_long_refused_input_is_not_echoed_whole(client):
    res = post_json(client, "/api/tokens", {"name": ["x" * 100_000]})
    assert res.status_code == 422 and len(res.content) < 5_000


def _routes(routes, prefix: str = ""):
    """Every APIRoute with its full path, looking inside included routers."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        elif hasattr(route, "original_router"):  # FastAPI keeps an included router whole
            yield from _routes(route.original_router.routes, prefix + route.include_context.prefix)


def _id_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route, API or page, whose path holds an id."""
    return [(m, path) for path, route in _routes(app.routes) if "{" in path for m in sorted(route.methods)]


def test_every_id_route_is_found(app):
    paths = {p for _, p in _id_routes(app)}
    for expected in ("/api/runs/{run_id}", "/api/runs/{run_id}/metrics", "/api/datasets/{dataset_id}",
                     "/api/experiments/{experiment_id}", "/api/tokens/{token_id}", "/runs/{run_id}",
                     "/api/projects/{project_id}/members/{user_id}"):
        assert expected in paths
    assert len(paths) >= 20


@pytest.mark.parametrize("bad_id", [PAST_INT4, HUGE, 2**64, 10**30, 0, -1])
def test_out_of_range_path_ids_are_404_or_422(client, app, bad_id):
    """Every route with an id in its path: an id no database can hold is refused, never a 500."""
    for method, path in _id_routes(app):
        url = path
        for name in [part[1:-1] for part in path.split("/") if part.startswith("{")]:
            url = url.replace("{" + name + "}", "minilm-l6" if name == "model_id" else str(bad_id))
        res = client.request(method, url, json={} if method in ("POST", "PATCH", "PUT") else None)
        assert res.status_code in (404, 422), f"{method} {url}: {res.status_code} {res.text[:200]}"
        strict_json(res)


@pytest.mark.parametrize("url", [
    f"/api/runs?dataset_id={HUGE}", f"/api/samples?runs={HUGE}", f"/api/samples?runs=1,{2**64}",
    "/api/samples?runs=1,-2", "/api/samples?runs=%C2%B2", f"/api/compare?runs={HUGE}",
    f"/runs/new?dataset_id={HUGE}", f"/playground?run={HUGE}", f"/api/compare?runs=1,{PAST_INT4}",
    f"/api/samples?runs={PAST_INT4}", f"/api/runs?dataset_id={PAST_INT4}",
])
def test_out_of_range_query_ids_are_refused(client, url):
    res = client.get(url)
    assert res.status_code in (404, 422), res.text


@pytest.mark.parametrize("project_id", [str(HUGE), str(PAST_INT4), "²", "-1", "1e3"])
def test_upload_to_an_impossible_project_is_404(client, project_id):
    res = client.post("/api/datasets", files={"file": ("a.csv", b"text,label\na,b\n")}, data={"project_id": project_id})
    assert res.status_code == 404, res.text


def _has_security_headers(res) -> None:
    for name, value in HEADERS:
        assert res.headers.get(name.decode()) == value.decode(), (name, res.status_code)


def test_security_headers_on_errors_and_no_store_on_secrets(client, client_as):
    _has_security_headers(client.get("/api/runs/999999999"))
    _has_security_headers(post_json(client, "/api/runs", {"dataset_id": NAN}))
    _has_security_headers(client_as(None).get("/api/runs"))
    res = client.post("/api/tokens", json={"name": "cache test"})
    assert res.status_code == 201
    _has_security_headers(res)
    assert res.headers["cache-control"] == "no-store"
    client.delete(f"/api/tokens/{res.json()['id']}")


def test_an_unhandled_error_is_a_json_500_with_the_headers(peftlab_env):
    """A bug (here a route made to fail) still answers JSON, with every security header."""
    from app.main import create_app

    app = create_app()

    @app.get("/api/probe-failure")
    def fail():
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        res = c.get("/api/probe-failure")
    assert res.status_code == 500
    assert res.headers["content-type"] == "application/json"
    assert "Internal server error" in res.json()["detail"] and "a bug" not in res.text
    _has_security_headers(res)


def test_admin_sharing_a_missing_project_is_404(client):
    """Found by the fuzzer: an admin adding a member to a project that does not exist got a 500
    (the membership row broke its foreign key)."""
    assert client.post("/api/users", json={"username": "fuzzed-member", "password": "long enough pw"}).status_code in (201, 422)
    res = client.post("/api/projects/2000000000/members", json={"username": "fuzzed-member"})
    assert res.status_code == 404, res.text


@pytest.mark.parametrize("offset", [HUGE, 2**64, 10**12])
def test_rows_past_the_end_are_an_empty_page(client, dataset_id, offset):
    res = client.get(f"/api/datasets/{dataset_id}/rows", params={"offset": offset})
    assert res.status_code == 200, res.text
    assert res.json()["rows"] == [] and res.json()["total"] == 20


@pytest.mark.parametrize("last_event_id", [str(2**200), "9" * 5000, "١٢"])
def test_event_stream_ignores_an_impossible_last_event_id(client, dataset_id, last_event_id):
    """An id the server never sent replays from the start instead of overflowing the database query."""
    run = post_json(client, "/api/runs", config(dataset_id)).json()
    try:
        client.post(f"/api/runs/{run['id']}/cancel")
        with client.stream("GET", f"/api/runs/{run['id']}/events", params={"last_event_id": last_event_id}) as res:
            assert res.status_code == 200
            text = "".join(res.iter_text())
        assert "event: status" in text and '"cancelled"' in text
    finally:
        client.delete(f"/api/runs/{run['id']}")


def test_nul_characters_in_text_are_never_a_500(client):
    """PostgreSQL text cannot hold NUL (found by the fuzzer on PostgreSQL): refused there with a 422 that
    says so; SQLite stores it."""
    from app.errors import NUL_IN_TEXT

    for res in (client.post("/api/projects", json={"name": "nul\u0000name"}), client.get("/api/runs", params={"q": "a\x00b"})):
        assert res.status_code < 500, res.text
        if res.status_code == 422 and isinstance(res.json()["detail"], str):
            assert res.json()["detail"] == NUL_IN_TEXT
