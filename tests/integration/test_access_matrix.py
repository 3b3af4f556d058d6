"""Every route in /openapi.json, as an anonymous client (401), as another user (404 on someone else's
objects, 403 where only admins may act) and as the owner (success). A new route fails this test
until it is given its row below, so nothing ships unchecked."""
import pytest
import yaml

from tests.conftest import make_account, wait_for_status
from tests.integration.test_end_to_end import sentiment_csv

pytestmark = pytest.mark.integration

ANY_2XX = "2xx"


@pytest.fixture(scope="module")
def world(app, worker_process, tiny_bert_source, admin_account):
    """Alice's objects (a succeeded LoRA run among them), and Bob, who should see none of them."""
    from fastapi.testclient import TestClient

    with TestClient(app, headers=admin_account.headers) as admin:
        model = admin.post("/api/models", json={"name": "matrix tiny bert", "source": tiny_bert_source}).json()
    clients = {name: TestClient(app, headers=make_account(name).headers if name else {}) for name in ("alice", "bob", None)}
    alice, bob = clients["alice"], clients["bob"]
    ds = alice.post("/api/datasets", files={"file": ("m.csv", sentiment_csv(60, seed=11))}).json()
    spare = alice.post("/api/datasets", files={"file": ("spare.csv", sentiment_csv(10, seed=12))}).json()
    body = {"dataset_id": ds["id"], "base_model": model["id"], "eval_fraction": 0.25,
            "columns": {"text": "review", "label": "sentiment"}, "method": {"type": "lora", "r": 4},
            "training": {"learning_rate": 0.03, "batch_size": 16, "max_steps": 3, "eval_every": 3}}
    run = alice.post("/api/runs", json=body).json()
    done = wait_for_status(lambda: alice.get(f"/api/runs/{run['id']}").json(), ("succeeded", "failed"))
    assert done["status"] == "succeeded", done["error"]
    token = alice.post("/api/tokens", json={"name": "matrix"}).json()
    project = alice.post("/api/projects", json={"name": "matrix project"}).json()
    make_account("carol")  # someone Alice can share with
    yield {"alice": alice, "bob": bob, "anon": clients[None], "admin": admin_account, "model": model,
           "dataset": ds, "spare": spare, "run": done, "body": body, "token": token, "project": project,
           "experiment": _sql_experiment(ds["id"]), "model_source": tiny_bert_source}
    for c in clients.values():
        c.close()


def _routes(app) -> list[tuple[str, str]]:
    return sorted((method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops)


# (method, path) → how a request is made and what Bob gets. Bob: 404 = not his; 403 = admin only;
# "own" = allowed, on his own things (the response must not hold Alice's objects).
def _table(w: dict) -> dict:
    run, ds, project = w["run"]["id"], w["dataset"]["id"], w["project"]["id"]
    return {
        ("GET", "/api/datasets"): dict(url="/api/datasets", bob="own"),
        ("POST", "/api/datasets"): dict(url="/api/datasets", files={"file": ("n.csv", b"text,label\na,b\nc,d\n")}, bob="own"),
        ("GET", "/api/datasets/{dataset_id}"): dict(url=f"/api/datasets/{ds}", bob=404),
        ("DELETE", "/api/datasets/{dataset_id}"): dict(url=f"/api/datasets/{w['spare']['id']}", bob=404, last=True),
        ("GET", "/api/datasets/{dataset_id}/rows"): dict(url=f"/api/datasets/{ds}/rows", bob=404),
        ("PATCH", "/api/datasets/{dataset_id}"): dict(url=f"/api/datasets/{w['spare']['id']}",
                                                      json={"columns": {"review": "review text"}}, bob=404),
        ("GET", "/api/datasets/{dataset_id}/distribution"): dict(url=f"/api/datasets/{ds}/distribution?column=sentiment",
                                                                 bob=404),
        ("GET", "/api/runs"): dict(url="/api/runs", bob="own"),
        ("POST", "/api/runs"): dict(url="/api/runs", json=w["body"], bob=422, cancel_after=True),  # her dataset is not his
        ("GET", "/api/runs/{run_id}"): dict(url=f"/api/runs/{run}", bob=404),
        ("PATCH", "/api/runs/{run_id}"): dict(url=f"/api/runs/{run}", json={"tags": ["matrix"], "notes": "checked"}, bob=404),
        ("GET", "/api/compare"): dict(url=f"/api/compare?runs={run}", bob=404),
        ("DELETE", "/api/runs/{run_id}"): dict(url="/api/runs/{fresh}", bob=404, fresh="cancelled", last=True),
        ("POST", "/api/runs/{run_id}/cancel"): dict(url="/api/runs/{fresh}/cancel", bob=404, fresh="queued"),
        ("GET", "/api/runs/{run_id}/metrics"): dict(url=f"/api/runs/{run}/metrics", bob=404),
        ("GET", "/api/runs/{run_id}/events"): dict(url=f"/api/runs/{run}/events", bob=404),
        ("GET", "/api/runs/{run_id}/artifacts"): dict(url=f"/api/runs/{run}/artifacts", bob=404),
        ("GET", "/api/runs/{run_id}/adapter"): dict(url=f"/api/runs/{run}/adapter", bob=404),
        ("GET", "/api/runs/{run_id}/merged"): dict(url=f"/api/runs/{run}/merged", bob=404),
        ("GET", "/api/runs/{run_id}/predictions"): dict(url=f"/api/runs/{run}/predictions", bob=404),
        ("POST", "/api/runs/{run_id}/predict"): dict(url=f"/api/runs/{run}/predict", json={"inputs": ["good great"]}, bob=404),
        ("GET", "/api/models"): dict(url="/api/models", bob="own"),
        ("GET", "/api/workers"): dict(url="/api/workers", bob="own"),  # deployment-wide, like the models
        ("POST", "/api/models"): dict(url="/api/models", json={"name": "admin model", "source": w["model_source"]}, bob=403, admin=True),
        ("POST", "/api/models/{model_id}/estimate"): dict(
            url=f"/api/models/{w['model']['id']}/estimate", json={"task": "classification", "num_labels": 2,
                                                                  "method": {"type": "lora"}}, bob="own"),
        ("GET", "/api/me"): dict(url="/api/me", bob="own"),
        ("GET", "/api/tokens"): dict(url="/api/tokens", bob="own"),
        ("POST", "/api/tokens"): dict(url="/api/tokens", json={"name": "x"}, bob="own"),
        ("DELETE", "/api/tokens/{token_id}"): dict(url=f"/api/tokens/{w['token']['id']}", bob=404, last=True),
        ("GET", "/api/users"): dict(url="/api/users", bob=403, admin=True),
        ("POST", "/api/users"): dict(url="/api/users", json={"username": "matrix-user", "password": "long enough"}, bob=403, admin=True),
        ("GET", "/api/projects"): dict(url="/api/projects", bob="own"),
        ("POST", "/api/projects"): dict(url="/api/projects", json={"name": "p"}, bob="own"),
        ("GET", "/api/projects/{project_id}/members"): dict(url=f"/api/projects/{w['project']['id']}/members", bob=404),
        ("POST", "/api/projects/{project_id}/members"): dict(url=f"/api/projects/{w['project']['id']}/members",
                                                             json={"username": "carol"}, bob=404),
        ("DELETE", "/api/projects/{project_id}/members/{user_id}"): dict(
            url=f"/api/projects/{w['project']['id']}/members/{{member}}", bob=404, member=True, last=True),
        ("GET", "/api/experiments"): dict(url="/api/experiments", bob="own"),
        ("POST", "/api/experiments"): dict(url="/api/experiments", bob=422, cleanup=_cancel_experiment_runs, json={
            "kind": "methods", "name": "matrix", "dataset_id": ds, "base_model": w["body"]["base_model"],
            "eval_fraction": 0.25, "columns": w["body"]["columns"], "methods": ["lora"], "training": w["body"]["training"]}),
        ("GET", "/api/experiments/{experiment_id}"): dict(url=f"/api/experiments/{w['experiment']}", bob=404),
        ("DELETE", "/api/experiments/{experiment_id}"): dict(url="/api/experiments/{fresh}", bob=404,
                                                             fresh=lambda w: _sql_experiment(w["dataset"]["id"])),
        ("POST", "/api/runs/{run_id}/move"): dict(url="/api/runs/{fresh}/move", json={"position": "top"}, bob=404,
                                                  fresh=_unsent_queued_run, cleanup=lambda w, res: w["alice"].post(
                                                      f"/api/runs/{res.json()['id']}/cancel")),
        ("GET", "/api/samples"): dict(url=f"/api/samples?runs={run}", bob=404),
        ("GET", "/api/runs/{run_id}/logs"): dict(url=f"/api/runs/{run}/logs", bob=404),
        ("GET", "/api/runs/{run_id}/logs/events"): dict(url=f"/api/runs/{run}/logs/events", bob=404),
        ("GET", "/api/runs/{run_id}/confusion"): dict(url=f"/api/runs/{run}/confusion", bob=404),
        ("GET", "/api/runs/{run_id}/config.yaml"): dict(url=f"/api/runs/{run}/config.yaml", bob=404),
        ("POST", "/api/runs/yaml"): dict(url="/api/runs/yaml", content=yaml.safe_dump(w["body"]), bob=422,
                                         cancel_after=True),  # her dataset is not his
        ("GET", "/api/methods"): dict(url="/api/methods", bob="own"),
        ("GET", "/api/projects/{project_id}/webhooks"): dict(url=f"/api/projects/{project}/webhooks", bob=404),
        ("POST", "/api/projects/{project_id}/webhooks"): dict(url=f"/api/projects/{project}/webhooks",
                                                              json={"url": DEAD_RECEIVER}, bob=404),
        ("DELETE", "/api/projects/{project_id}/webhooks/{webhook_id}"): dict(
            url=f"/api/projects/{project}/webhooks/{{fresh}}", bob=404, fresh=_webhook),
        ("POST", "/api/projects/{project_id}/webhooks/{webhook_id}/test"): dict(
            url=f"/api/projects/{project}/webhooks/{{fresh}}/test", bob=404, fresh=_webhook),
    }


def _call(client, method, spec, url):
    if "content" in spec:
        return client.request(method, url, content=spec["content"], headers={"content-type": "application/yaml"})
    return client.request(method, url, json=spec.get("json"), files=spec.get("files"))


# A receiver nobody listens on (connection refused at once): webhook tests answer without waiting.
DEAD_RECEIVER = "http://127.0.0.1:9/hook"


def _webhook(w) -> int:
    """A webhook of Alice's project, made fresh for a route that removes or fires it."""
    res = w["alice"].post(f"/api/projects/{w['project']['id']}/webhooks", json={"url": DEAD_RECEIVER})
    assert res.status_code == 201, res.text
    return res.json()["id"]


def _sql_experiment(dataset_id: int) -> int:
    """An experiment of Alice's whose one run is already cancelled (written to SQL: no worker takes it)."""
    from app.datasets.models import Dataset
    from app.db import session_scope
    from app.experiments.models import Experiment
    from app.runs.models import Run

    with session_scope() as s:
        project = s.get(Dataset, dataset_id).project_id
        experiment = Experiment(name="matrix experiment", kind="methods", spec={}, project_id=project)
        s.add(experiment)
        s.flush()
        s.add(Run(name="matrix experiment · lora", status="cancelled", config={}, summary={}, dataset_id=dataset_id,
                  base_model="minilm-l6", method="lora", task="classification", project_id=project,
                  experiment_id=experiment.id))
        return experiment.id


def _unsent_queued_run(w) -> int:
    """A queued run of Alice's never sent to the broker, so the worker cannot start it while it is moved."""
    from app.db import session_scope
    from app.runs.models import Run

    with session_scope() as s:
        run = Run(name="matrix queued", status="queued", config={}, summary={}, dataset_id=w["dataset"]["id"],
                  base_model="minilm-l6", method="lora", task="classification",
                  project_id=s.get(Run, w["run"]["id"]).project_id)
        s.add(run)
        s.flush()
        return run.id


def _cancel_experiment_runs(w, res) -> None:
    for run in res.json()["runs"]:
        w["alice"].post(f"/api/runs/{run['id']}/cancel")


def _fresh_run(w, status: str) -> int:
    """A run of Alice's to cancel (queued: cancelling answers 200 whether or not a worker took it)
    or to delete (cancelled: no worker can take it). Written straight to the database."""
    from app.db import session_scope
    from app.runs.models import Run

    with session_scope() as s:
        template = s.get(Run, w["run"]["id"])
        run = Run(name="fresh", config=template.config, summary={}, dataset_id=template.dataset_id,
                  base_model=template.base_model, method=template.method, task=template.task,
                  project_id=template.project_id, owner_id=template.owner_id, status=status)
        s.add(run)
        s.flush()
        run_id = run.id
    return run_id


def test_every_route_is_covered(app, world):
    table = _table(world)
    assert set(_routes(app)) == set(table), "a route was added or removed: give it a row in _table"


def test_anonymous_gets_401_everywhere(app, world):
    for method, path in _routes(app):
        spec = _table(world)[(method, path)]
        res = _call(world["anon"], method, spec, spec["url"].replace("{fresh}", "1").replace("{member}", "1"))
        assert res.status_code == 401, (method, path, res.status_code)


def test_another_user_gets_404_or_403_and_the_owner_succeeds(app, world):
    table = _table(world)
    order = sorted(table.items(), key=lambda kv: kv[1].get("last", False))
    alice, bob = world["alice"], world["bob"]
    alice_ids = {world["dataset"]["id"], world["spare"]["id"], world["run"]["id"]}
    for (method, path), spec in order:
        url = spec["url"]
        if spec.get("fresh"):
            fresh = spec["fresh"](world) if callable(spec["fresh"]) else _fresh_run(world, spec["fresh"])
            url = url.replace("{fresh}", str(fresh))
        if spec.get("member"):
            make_account("dan")
            member = alice.post(f"/api/projects/{world['project']['id']}/members", json={"username": "dan"})
            url = url.replace("{member}", str(member.json()["user_id"]))
        res = _call(bob, method, spec, url)
        if spec["bob"] == "own":
            assert 200 <= res.status_code < 300, (method, path, res.status_code, res.text)
            if method == "GET" and isinstance(res.json(), list) and path in ("/api/datasets", "/api/runs"):
                assert not alice_ids & {o["id"] for o in res.json()}, (method, path)
        else:
            assert res.status_code == spec["bob"], (method, path, res.status_code, res.text)
        owner = world["alice"]
        if spec.get("admin"):
            from fastapi.testclient import TestClient

            owner = TestClient(app, headers=world["admin"].headers)
        res = _call(owner, method, spec, url)
        assert 200 <= res.status_code < 300, (method, path, res.status_code, res.text)
        if spec.get("cancel_after"):
            alice.post(f"/api/runs/{res.json()['id']}/cancel")
        if spec.get("cleanup"):
            spec["cleanup"](world, res)


def test_pages_redirect_anonymous_users_and_hide_other_users_objects(world):
    run, ds = world["run"]["id"], world["dataset"]["id"]
    experiment = world["experiment"]
    pages = ["/runs", "/runs/new", f"/runs/{run}", "/datasets", f"/datasets/{ds}", "/models", "/settings",
             "/experiments", f"/experiments/{experiment}", "/playground", f"/playground?run={run}", f"/samples?runs={run}",
             f"/compare?runs={run}", f"/runs/new?clone={run}", "/workers"]
    for page in pages:
        res = world["anon"].get(page, follow_redirects=False)
        assert res.status_code == 303 and res.headers["location"].startswith("/login?next="), page
        assert world["alice"].get(page).status_code == 200, page
    for page in (f"/runs/{run}", f"/datasets/{ds}", f"/experiments/{experiment}"):
        assert world["bob"].get(page).status_code == 404, page
