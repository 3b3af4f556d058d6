"""GET /api/compare, PATCH /api/runs/{id} and the runs list's filters and sort, on runs written
straight into the database (no training)."""
from datetime import timedelta

import pytest

from app.compare import service as compare_service
from app.datasets.models import Dataset
from app.db import session_scope, utcnow
from app.metrics.service import record_points
from app.runs.models import Run, RunTag

T0 = 1_700_000_000.0


def lora_config(dataset_id: int, **method) -> dict:
    return {"name": "x", "dataset_id": dataset_id, "eval_dataset_id": None, "eval_fraction": 0.1,
            "base_model": "minilm-l6", "task": "classification", "columns": {"text": "t", "label": "l"},
            "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.1, "target_modules": None, **method},
            "training": {"learning_rate": 0.0005, "epochs": 1, "batch_size": 32}}


@pytest.fixture
def alice(client_as):
    return client_as("alice")


@pytest.fixture
def dataset(alice):
    csv = "t,l\n" + "a,1\nb,2\n" * 5
    ds = alice.post("/api/datasets", files={"file": ("compare.csv", csv.encode())}).json()
    with session_scope() as s:
        ds["project_id"] = s.get(Dataset, ds["id"]).project_id
    return ds


@pytest.fixture
def make_run(client, dataset):
    """make_run(name, points=[(metric, step, value, time)], ...) → id of a succeeded run in Alice's project."""
    made: list[int] = []

    def make(name, points=(), *, config=None, summary=None, method="lora", base_model="minilm-l6",
             tags=(), status="succeeded", started_offset=0.0, duration=60.0):
        started = utcnow() - timedelta(hours=1) + timedelta(seconds=started_offset)
        with session_scope() as s:
            run = Run(name=name, status=status, config=config or lora_config(dataset["id"]), summary=summary or {},
                      dataset_id=dataset["id"], base_model=base_model, method=method, task="classification",
                      project_id=dataset["project_id"], started_at=started,
                      finished_at=started + timedelta(seconds=duration))
            run.tag_rows = [RunTag(tag=t) for t in tags]
            s.add(run)
            s.flush()
            made.append(run.id)
            points = list(points)
            for i in range(0, len(points), 5000):  # PostgreSQL takes at most 65,535 parameters a statement
                record_points(s, run.id, points[i:i + 5000])
            return run.id

    yield make
    for run_id in made:
        client.delete(f"/api/runs/{run_id}")


def loss_points(n: int, spike_at: int | None = None, name: str = "train/loss"):
    pts = [(name, s, 2.0 / (1 + s / 1000), T0 + s * 0.5) for s in range(n)]
    if spike_at is not None:
        pts[spike_at] = (name, spike_at, 50.0, T0 + spike_at * 0.5)
    return pts


def test_downsampling_keeps_the_spike_and_the_ends(client, make_run):
    run = make_run("spiky", loss_points(20_000, spike_at=12_345) + loss_points(20_000, name="eval/loss"))
    res = client.get(f"/api/compare?runs={run}&names=train/loss,eval/loss&max_points=500")
    assert res.status_code == 200, res.text
    series = res.json()["series"][str(run)]
    loss = series["train/loss"]
    assert len(loss) <= 500 and len(series["eval/loss"]) <= 500
    assert [12_345, 50.0] in loss
    assert loss[0][0] == 0 and loss[-1][0] == 19_999
    assert [p[0] for p in loss] == sorted({p[0] for p in loss})
    assert min(p[1] for p in loss) == pytest.approx(2.0 / (1 + 19_999 / 1000), rel=1e-4)


def test_short_series_come_back_whole(client, make_run):
    run = make_run("short", [("eval/accuracy", s * 10, 0.5 + s / 100, T0 + s) for s in range(30)])
    series = client.get(f"/api/compare?runs={run}").json()["series"][str(run)]
    assert series == {"eval/accuracy": [[s * 10, pytest.approx(0.5 + s / 100)] for s in range(30)]}


def test_x_axis_by_epoch_and_by_time(client, make_run):
    points = [("train/epoch", s, s / 100, T0 + s) for s in range(0, 301)]
    points += [("train/loss", s, 1.0, T0 + 7 + s * 2) for s in range(0, 301, 50)]
    points += [("eval/accuracy", s, 0.9, T0 + s) for s in (150, 300)]
    run = make_run("epochs", points)
    by_epoch = client.get(f"/api/compare?runs={run}&x=epoch").json()
    assert by_epoch["x"] == "epoch"
    assert by_epoch["series"][str(run)]["eval/accuracy"] == [[1.5, 0.9], [3.0, 0.9]]
    assert "train/epoch" not in by_epoch["series"][str(run)]
    by_time = client.get(f"/api/compare?runs={run}&x=time&names=train/loss").json()
    loss = by_time["series"][str(run)]["train/loss"]
    # The run's start is its first point here (started_at is later): x counts seconds from it.
    assert loss[0] == [7.0, 1.0] and loss[-1] == [607.0, 1.0]


def test_epoch_axis_interpolates_between_epoch_points(client, make_run):
    points = [("train/epoch", 0, 0.0, T0), ("train/epoch", 100, 2.0, T0 + 1), ("eval/loss", 25, 0.3, T0)]
    run = make_run("sparse epochs", points)
    series = client.get(f"/api/compare?runs={run}&x=epoch").json()["series"][str(run)]
    assert series == {"eval/loss": [[0.5, 0.3]]}


def test_config_diff_lists_only_differing_keys(client, make_run, dataset):
    a = make_run("r8", config=lora_config(dataset["id"], r=8))
    b = make_run("r16", config=lora_config(dataset["id"], r=16, target_modules=["query"]))
    body = client.get(f"/api/compare?runs={a},{b}").json()
    diff = {row["key"]: row["values"] for row in body["config_diff"]}
    assert diff == {"method.r": {str(a): 8, str(b): 16},
                    "method.target_modules": {str(a): None, str(b): ["query"]}}
    assert [r["id"] for r in body["runs"]] == [a, b]
    assert {r["color_index"] for r in body["runs"]} == {a, b}
    assert body["runs"][0]["config"]["method"]["r"] == 8


def test_another_users_run_is_404_without_naming_it(client_as, make_run):
    run = make_run("alice's")
    bob = client_as("bob")
    res = bob.get(f"/api/compare?runs={run}")
    assert res.status_code == 404 and str(run) not in res.text
    assert client_as("alice").get(f"/api/compare?runs={run}").status_code == 200
    assert client_as("alice").get(f"/api/compare?runs={run},999999").status_code == 404


@pytest.mark.parametrize("query", ["runs=", "runs=a,b", "runs=1;2", "runs=1&max_points=5000", "runs=1&x=wall"])
def test_bad_compare_queries_are_422(client, query):
    assert client.get(f"/api/compare?{query}").status_code == 422


def test_finished_series_are_cached_until_new_points(client, make_run):
    run = make_run("cached", loss_points(3000))
    first = client.get(f"/api/compare?runs={run}&max_points=100").json()
    with session_scope() as s:
        record_points(s, run, [("train/loss", 5000, 99.0, T0 + 5000)])
    again = client.get(f"/api/compare?runs={run}&max_points=100").json()
    assert first != again and [5000, 99.0] in again["series"][str(run)]["train/loss"]
    assert any(key[0] == run for key in compare_service._curves_cache.entries)


def test_patch_sets_tags_notes_and_name(client, make_run):
    run = make_run("before")
    res = client.patch(f"/api/runs/{run}", json={"tags": [" baseline ", "lr-sweep", "baseline"], "notes": "first try"})
    assert res.status_code == 200, res.text
    assert res.json()["tags"] == ["baseline", "lr-sweep"] and res.json()["notes"] == "first try"
    assert res.json()["name"] == "before"
    res = client.patch(f"/api/runs/{run}", json={"name": " after ", "tags": ["lr-sweep"]})
    assert (res.json()["name"], res.json()["tags"], res.json()["notes"]) == ("after", ["lr-sweep"], "first try")
    assert client.get(f"/api/runs/{run}").json()["tags"] == ["lr-sweep"]


@pytest.mark.parametrize("body", [
    {"tags": [f"t{i}" for i in range(21)]}, {"tags": ["x" * 41]}, {"tags": ["  "]}, {"notes": "n" * 10_001},
    {"name": ""}, {"name": "   "}, {"status": "succeeded"}, {"tags": "one"},
])
def test_patch_refuses_bad_values(client, make_run, body):
    run = make_run("strict")
    assert client.patch(f"/api/runs/{run}", json=body).status_code == 422


def test_patch_someone_elses_run_is_404(client_as, make_run):
    run = make_run("private")
    assert client_as("bob").patch(f"/api/runs/{run}", json={"notes": "mine now"}).status_code == 404


def test_runs_list_filters_by_base_model_tag_and_sorts(client, make_run):
    a = make_run("b-run", method="lora", tags=["sweep"], summary={"eval": {"accuracy": 0.7}}, duration=30)
    b = make_run("a-run", method="full", base_model="other-model", tags=["sweep", "best"],
                 summary={"eval": {"accuracy": 0.9}}, duration=90)
    c = make_run("c-run", method="prompt", summary={"eval": {"perplexity": 12.0}}, duration=10)
    mine = {a, b, c}

    def ids(query):
        return [r["id"] for r in client.get(f"/api/runs?{query}").json() if r["id"] in mine]

    assert ids("tag=sweep") == [b, a]
    assert ids("tag=best") == [b]
    assert ids("base_model=other-model") == [b]
    assert ids("base_model=minilm-l6&tag=sweep") == [a]
    assert ids("sort=name&order=asc") == [b, a, c]
    assert ids("sort=duration&order=desc") == [b, a, c]
    assert ids("sort=best&order=desc") == [b, a, c]  # accuracy first; perplexity-only runs after
    assert ids("sort=method&order=asc") == [b, a, c]
    assert ids("sort=id&order=asc") == [a, b, c]
    assert client.get("/api/runs?sort=colour").status_code == 422


def test_the_servers_preload_leaves_startup_objects_to_the_collector_no_more(app):
    """After the background preload, what startup loaded is frozen: a full collection inside a request
    then walks only what requests made (docs/PERFORMANCE.md, the cold path)."""
    import gc

    from app.main import _preload

    gc.unfreeze()
    try:
        _preload()
        assert gc.get_freeze_count() > 10_000
        assert "scipy.special" in __import__("sys").modules  # the comparison's import happened first
    finally:
        gc.unfreeze()
