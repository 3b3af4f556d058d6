"""Search experiments at submit: the space is checked against its base config (422 with a message naming the
key), the first `parallelism` trials are queued at once, and Optuna's tables live beside peftlab's."""
import pytest
import sqlalchemy as sa

from app.db import get_engine, session_scope
from app.experiments.search_models import SearchTrial
from tests.api.conftest import upload_reviews


@pytest.fixture
def dataset(client):
    return upload_reviews(client, "search-reviews.csv")


def search_body(dataset_id, space=None, **over):
    base = {"dataset_id": dataset_id, "base_model": "minilm-l6", "columns": {"text": "sentence", "label": "label"},
            "method": {"type": "lora"}, "training": {"max_steps": 5, "eval_every": 1}}
    space = space or {"training.learning_rate": {"type": "log_uniform", "low": 1e-5, "high": 1e-2},
                      "method.r": {"type": "integer", "low": 2, "high": 16, "step": 2}}
    return {"kind": "search", "name": "lr search", "base": base, "space": space, "trials": 6, "parallelism": 2, **over}


def refused(client, body) -> list[dict]:
    before = len(client.get("/api/experiments").json())
    res = client.post("/api/experiments", json=body)
    assert res.status_code == 422, res.text
    assert len(client.get("/api/experiments").json()) == before  # nothing made
    return res.json()["detail"]


def test_a_search_queues_its_first_trials_with_values_from_the_space(client, dataset, made):
    res = client.post("/api/experiments", json=search_body(dataset["id"]))
    assert res.status_code == 201, res.text
    x = res.json()
    made.append(x["id"])
    assert x["kind"] == "search" and x["run_count"] == 2  # parallelism 2: two trials at once, not six
    search = x["search"]
    assert search["metric"] == "eval/accuracy" and search["direction"] == "maximize"  # classification's default
    assert search["n_trials"] == 6 and search["finished"] is False and search["best"] is None
    assert [t["number"] for t in search["trials"]] == [0, 1]
    for trial, run in zip(search["trials"], x["runs"]):
        assert trial["run_id"] == run["id"] and trial["state"] in ("queued", "running")
        lr, r = trial["params"]["training.learning_rate"], trial["params"]["method.r"]
        assert 1e-5 <= lr <= 1e-2 and r in range(2, 17, 2)
        assert run["config"]["training"]["learning_rate"] == lr and run["config"]["method"]["r"] == r
        assert run["name"].startswith(f"lr search · trial {trial['number']}: learning_rate=")
    # Different seeds per trial number: the two trials do not repeat each other.
    assert search["trials"][0]["params"] != search["trials"][1]["params"]
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(SearchTrial)
                              .where(SearchTrial.experiment_id == x["id"])) == 2
    # Optuna's own storage holds the study and its two trials, in the same database.
    with get_engine().connect() as conn:
        study_id = conn.scalar(sa.text("SELECT study_id FROM studies WHERE study_name = :n"),
                               {"n": f"peftlab-experiment-{x['id']}"})
        assert conn.scalar(sa.text("SELECT count(*) FROM trials WHERE study_id = :s"), {"s": study_id}) == 2


def test_deleting_a_search_removes_its_study(client, dataset):
    x = client.post("/api/experiments", json=search_body(dataset["id"], parallelism=1)).json()
    assert client.delete(f"/api/experiments/{x['id']}").status_code == 204
    with get_engine().connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM studies WHERE study_name = :n"),
                           {"n": f"peftlab-experiment-{x['id']}"}) == 0
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(SearchTrial)
                              .where(SearchTrial.experiment_id == x["id"])) == 0


def test_an_unknown_key_is_named(client, dataset):
    detail = refused(client, search_body(dataset["id"], {"training.learnin_rate": {"type": "uniform", "low": 0.1, "high": 0.2}}))
    assert detail == [{"loc": ["body", "space", "training.learnin_rate"], "type": "extra_forbidden",
                       "msg": "training.learnin_rate is not a setting of this run config (see POST /api/runs)"}]


def test_a_method_key_the_method_lacks_is_named(client, dataset):
    detail = refused(client, search_body(dataset["id"], {"method.reduction_factor": {"type": "integer", "low": 2, "high": 8}}))
    assert [d["loc"] for d in detail] == [["body", "space", "method.reduction_factor"]]
    assert "not a setting" in detail[0]["msg"]


def test_log_uniform_needs_a_positive_low(client, dataset):
    detail = refused(client, search_body(dataset["id"], {"training.learning_rate": {"type": "log_uniform", "low": 0, "high": 0.01}}))
    assert detail[0]["loc"][:5] == ["body", "search", "space", "training.learning_rate", "log_uniform"]
    assert "log-uniform range needs low > 0" in detail[0]["msg"]


@pytest.mark.parametrize("dist, words", [
    ({"type": "uniform", "low": 0.3, "high": 0.1}, "must be below high"),
    ({"type": "uniform", "low": 0.1, "high": 0.1}, "must be below high"),
    ({"type": "integer", "low": 2, "high": 9, "step": 2}, "multiple of step"),
    ({"type": "choice", "choices": [0.1]}, "at least 2"),
    ({"type": "choice", "choices": [0.1, 0.1]}, "must not repeat"),
    ({"type": "normal", "mean": 0.1}, "type"),
])
def test_bad_bounds_are_refused(client, dataset, dist, words):
    detail = refused(client, search_body(dataset["id"], {"method.dropout": dist}))
    assert detail[0]["loc"][:4] == ["body", "search", "space", "method.dropout"]
    assert words in detail[0]["msg"] or words in str(detail[0])


def test_a_bound_the_run_config_refuses_is_named_with_its_value(client, dataset):
    # learning_rate must be ≤ 1: the high end would make a run POST /api/runs refuses.
    detail = refused(client, search_body(dataset["id"], {"training.learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 3}}))
    assert [d["loc"] for d in detail] == [["body", "space", "training.learning_rate"]]
    assert detail[0]["msg"].startswith("training.learning_rate = 3 makes a run that is refused:")
    # A real-valued range over an integer setting: say which key.
    detail = refused(client, search_body(dataset["id"], {"method.r": {"type": "uniform", "low": 2, "high": 8}}))
    assert detail[0]["loc"] == ["body", "space", "method.r"] and "integer" in detail[0]["msg"]


def test_a_choice_the_run_config_refuses_is_named(client, dataset):
    detail = refused(client, search_body(dataset["id"], {"training.batch_size": {"type": "choice", "choices": [8, 0, 16]}}))
    assert detail[0]["loc"] == ["body", "space", "training.batch_size"] and "batch_size = 0" in detail[0]["msg"]


def test_base_problems_and_objective_and_sizes(client, dataset):
    body = search_body(dataset["id"])
    body["base"]["eval_fraction"] = 0
    detail = refused(client, body)
    assert detail[0]["loc"] == ["body", "base", "eval_fraction"] and "eval metric" in detail[0]["msg"]
    detail = refused(client, search_body(dataset["id"], objective={"metric": "eval/perplexity"}))
    assert detail[0]["loc"] == ["body", "objective", "metric"] and "classification runs do not report" in detail[0]["msg"]
    detail = refused(client, search_body(dataset["id"], trials=3, parallelism=4))
    assert "parallelism (4) cannot exceed trials (3)" in detail[0]["msg"]
    detail = refused(client, search_body(dataset["id"], trials=65))
    assert detail[0]["loc"][-1] == "trials"
    body = search_body(dataset["id"])
    body["base"]["dataset_id"] = 999999
    detail = refused(client, body)
    assert detail[0]["loc"] == ["body", "base", "dataset_id"] and "does not exist" in detail[0]["msg"]
    detail = refused(client, search_body(dataset["id"], {"name": {"type": "choice", "choices": ["a", "b"]}}))
    assert "run names come from the experiment" in detail[0]["msg"]


def test_model_and_migrations_agree_with_optuna_tables_present():
    """Autogenerate finds nothing to change: our tables match the migrations and Optuna's are left alone."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import app.tables  # noqa: F401
    from app.db import Base
    from app.experiments.optuna_tables import include_object

    with get_engine().connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include_object, "render_as_batch": True})
        assert compare_metadata(context, Base.metadata) == []


def _end_run(run_id: int, status: str, **kw) -> None:
    """Play the worker: take the queued run and end it."""
    from app.runs import lifecycle

    with session_scope() as session:
        lease = lifecycle.take(session, run_id, "search-test-worker", 60)
        if lease is None:  # a worker of this test session took it after all
            pytest.skip(f"run {run_id} was taken by a worker; this test plays the worker itself")
        assert lifecycle.finish(session, run_id, lease.worker, status, attempt=lease.attempt, **kw)


def _wait_search(client, experiment_id, done, timeout=60.0) -> dict:
    """Until done(search) holds; the app's own loop or an explicit round may make it so."""
    import time

    from app.experiments import search

    deadline = time.time() + timeout
    while True:
        with session_scope() as session:
            search.drive(session, experiment_id)
        x = client.get(f"/api/experiments/{experiment_id}").json()
        if done(x["search"]):
            return x
        assert time.time() < deadline, x["search"]
        time.sleep(0.2)


@pytest.fixture
def unsent(monkeypatch):
    """Trials' runs stay in SQL, not sent to the broker, so no worker of the session takes them."""
    from app.runs import service as runs_service

    monkeypatch.setattr(runs_service, "enqueue", lambda session, run_id: False)


def test_results_are_told_and_the_search_carries_on_after_a_restart(client, dataset, made, unsent):
    from app.experiments import optuna_tables

    res = client.post("/api/experiments", json=search_body(dataset["id"], trials=3, parallelism=1))
    x = res.json()
    made.append(x["id"])
    first = x["search"]["trials"][0]
    _end_run(first["run_id"], "succeeded", summary={"eval": {"accuracy": 0.8, "loss": 0.4}})
    # A "restart": a fresh Optuna storage (new engine) picks the study up from the database.
    optuna_tables.storage.cache_clear()
    x = _wait_search(client, x["id"], lambda s: len(s["trials"]) == 2)
    search = x["search"]
    assert search["trials"][0]["state"] == "done" and search["trials"][0]["value"] == 0.8
    assert search["best"]["number"] == 0 and search["trials"][1]["state"] in ("queued", "running")
    _end_run(search["trials"][1]["run_id"], "failed", error="CUDA out of memory")
    x = _wait_search(client, x["id"], lambda s: len(s["trials"]) == 3)
    assert x["search"]["trials"][1]["state"] == "failed"
    assert x["search"]["trials"][1]["reason"] == "its run failed: CUDA out of memory"
    assert client.post(f"/api/runs/{x['search']['trials'][2]['run_id']}/cancel").status_code in (200, 202)
    x = _wait_search(client, x["id"], lambda s: s["finished"])
    assert [t["state"] for t in x["search"]["trials"]] == ["done", "failed", "cancelled"]
    assert x["search"]["counts"] == {"done": 1, "failed": 1, "cancelled": 1} and x["run_count"] == 3
    # Optuna was told each result.
    with get_engine().connect() as conn:
        states = conn.execute(sa.text(
            "SELECT t.number, t.state, v.value FROM trials t JOIN studies s ON s.study_id = t.study_id "
            "LEFT JOIN trial_values v ON v.trial_id = t.trial_id WHERE s.study_name = :n ORDER BY t.number"),
            {"n": f"peftlab-experiment-{x['id']}"}).all()
    assert [(n, s) for n, s, _ in states] == [(0, "COMPLETE"), (1, "FAIL"), (2, "FAIL")] and states[0][2] == 0.8


def test_a_search_held_by_another_replica_is_left_alone(client, dataset, made, unsent):
    from datetime import timedelta

    from app.db import utcnow
    from app.experiments import search
    from app.experiments.search_models import SearchStudy

    x = client.post("/api/experiments", json=search_body(dataset["id"], trials=3, parallelism=1)).json()
    made.append(x["id"])
    with session_scope() as session:
        session.execute(sa.update(SearchStudy).where(SearchStudy.experiment_id == x["id"])
                        .values(lease_holder="other-host:1:abc", lease_expires_at=utcnow() + timedelta(seconds=60)))
        session.commit()
        assert search.drive(session, x["id"]) is False
        session.execute(sa.update(SearchStudy).where(SearchStudy.experiment_id == x["id"])
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1)))  # that replica died
        session.commit()
        assert search.drive(session, x["id"]) is True
        assert session.scalar(sa.select(SearchStudy.lease_holder).where(SearchStudy.experiment_id == x["id"])) is None


@pytest.mark.parametrize("space, over", [
    ({"training.learning_rate": {"type": "uniform", "low": -1e308, "high": 1e308}}, {}),
    ({"method": {"type": "choice", "choices": [1, "x"]}}, {}),
    ({"training.learning_rate.x": {"type": "uniform", "low": 0.1, "high": 0.2}}, {}),
    ({"method.r": {"type": "integer", "low": 1, "high": 8, "log": True, "step": 2}}, {}),
    ({"method.r": {"type": "integer", "low": 0, "high": 8, "log": True}}, {}),
    ({"method.r": {"type": "choice", "choices": [4, True, None, "8"]}}, {}),
    ({"method.type": {"type": "choice", "choices": ["lora", "no-such-method"]}}, {}),
    ({"method.r": {"type": "integer", "low": 2, "high": 8}}, {"seed": 2**40}),
    ({"method.r": {"type": "integer", "low": 2, "high": 8}}, {"objective": {"metric": "eval/loss", "direction": "up"}}),
    ({"method.r": {"type": "integer", "low": 2, "high": 8}}, {"pruner": {"type": "median", "patience": 3}}),
    ({"method.r": {"type": "integer", "low": 2, "high": 8}}, {"base": {"training": None}}),
    ({"method.r": {"type": "integer", "low": 2, "high": 8}}, {"base": []}),
])
def test_hostile_searches_are_refused_with_a_message(client, dataset, space, over):
    body = search_body(dataset["id"], space)
    body.update(over)
    detail = refused(client, body)
    assert detail and all(item.get("msg") for item in detail), detail
