"""Search experiments at submit: the space is checked against its base config (422 with a message naming the
key), the first `parallelism` trials are queued at once, and Optuna's tables live beside peftlab's."""
import pytest
import sqlalchemy as sa

from app.db import get_engine, session_scope
from app.experiments.search_models import SearchTrial


@pytest.fixture
def dataset(client):
    csv = "sentence,label\n" + "".join(f"good movie {i},pos\nbad film {i},neg\n" for i in range(10))
    return client.post("/api/datasets", files={"file": ("search-reviews.csv", csv.encode())}).json()


@pytest.fixture
def made(client):
    """Experiments made here; deleted afterwards (queued runs are cancelled first, so no worker runs them)."""
    ids: list[int] = []
    yield ids
    for experiment_id in ids:
        client.delete(f"/api/experiments/{experiment_id}")


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
