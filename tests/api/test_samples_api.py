"""GET /api/samples: eval rows of classification runs lined up with each run's stored predictions."""
import json

import pytest

from app.artifacts.service import record_artifact, run_artifact_dir
from app.db import session_scope
from app.runs.models import Run

TRUTH = ["pos", "neg", "pos", "neg", "pos", "neg"]
ROWS = [3, 7, 8, 12, 15, 19]  # the held-out rows of the dataset (any indices will do here)


@pytest.fixture
def dataset(client):
    csv = "sentence,label\n" + "".join(f"review number {i},{'pos' if i % 2 == 0 else 'neg'}\n" for i in range(20))
    return client.post("/api/datasets", files={"file": ("samples.csv", csv.encode())}).json()


@pytest.fixture
def make_run(client, dataset, settings):
    """make_run(predictions, **config) → a succeeded run with a stored predictions artifact."""
    made: list[int] = []

    def make(preds: list[str] | None, *, task="classification", seed=0, eval_fraction=0.3, eval_dataset_id=None,
             name="samples run") -> int:
        config = {"dataset_id": dataset["id"], "eval_dataset_id": eval_dataset_id, "eval_fraction": eval_fraction,
                  "task": task, "columns": {"text": "sentence", "label": "label"},
                  "method": {"type": "lora"}, "training": {"seed": seed}}
        with session_scope() as s:
            run = Run(name=name, status="succeeded", config=config, summary={}, dataset_id=dataset["id"],
                      eval_dataset_id=eval_dataset_id, base_model="minilm-l6", method="lora", task=task,
                      project_id=dataset.get("project_id") or _project_of(s, dataset["id"]))
            s.add(run)
            s.flush()
            run_id = run.id
        made.append(run_id)
        if preds is not None:
            path = run_artifact_dir(settings, run_id, "predictions") / "predictions.jsonl"
            with open(path, "w") as f:
                for row, label, pred in zip(ROWS, TRUTH, preds):
                    probs = [0.8, 0.2] if pred == "neg" else [0.3, 0.7]  # label-id order: neg, pos
                    f.write(json.dumps({"row": row, "label": label, "prediction": pred, "probs": probs}) + "\n")
            with session_scope() as s:
                record_artifact(s, run_id, "predictions", path)
        return run_id

    yield make
    for run_id in made:
        client.delete(f"/api/runs/{run_id}")


def _project_of(session, dataset_id):
    from app.datasets.models import Dataset

    return session.get(Dataset, dataset_id).project_id


def _ids(*ids) -> str:
    return ",".join(map(str, ids))


def test_every_eval_row_with_each_runs_prediction(client, make_run):
    a = make_run(["pos", "neg", "pos", "neg", "pos", "neg"])  # all right
    b = make_run(["pos", "pos", "pos", "neg", "neg", "pos"])  # rows 7, 15, 19 wrong
    res = client.get("/api/samples", params={"runs": _ids(a, b)})
    assert res.status_code == 200, res.text
    data = res.json()
    assert [r["id"] for r in data["runs"]] == [a, b]
    assert data["runs"][0]["accuracy"] == 1.0 and data["runs"][1]["accuracy"] == 0.5
    assert data["counts"] == {"all": 6, "disagree": 3, "all_wrong": 0} and data["total"] == 6
    assert [r["row"] for r in data["rows"]] == ROWS
    first = data["rows"][0]
    assert first["text"] == "review number 3" and first["label"] == "pos"
    second = data["rows"][1]
    assert second["text"] == "review number 7" and second["label"] == "neg"
    assert [p["prediction"] for p in second["predictions"]] == ["neg", "pos"]
    assert [p["correct"] for p in second["predictions"]] == [True, False]
    assert second["predictions"][0]["confidence"] == pytest.approx(0.8)
    assert "held-out 0.3 of dataset" in data["eval_set"]


def test_disagree_and_all_wrong_filters_and_paging(client, make_run):
    a = make_run(["neg", "neg", "pos", "pos", "pos", "neg"])  # wrong: 3, 12
    b = make_run(["neg", "pos", "pos", "pos", "neg", "neg"])  # wrong: 3, 7, 12, 15
    c = make_run(["neg", "neg", "neg", "pos", "pos", "neg"])  # wrong: 3, 8, 12
    ids = _ids(a, b, c)
    disagree = client.get("/api/samples", params={"runs": ids, "filter": "disagree"}).json()
    assert [r["row"] for r in disagree["rows"]] == [7, 8, 15] and disagree["total"] == 3
    wrong = client.get("/api/samples", params={"runs": ids, "filter": "all_wrong"}).json()
    assert [r["row"] for r in wrong["rows"]] == [3, 12]
    assert all(not p["correct"] for r in wrong["rows"] for p in r["predictions"])
    page = client.get("/api/samples", params={"runs": ids, "offset": 2, "limit": 3}).json()
    assert [r["row"] for r in page["rows"]] == [8, 12, 15] and page["total"] == 6
    assert page["offset"] == 2 and page["limit"] == 3


def test_runs_on_different_eval_sets_are_refused(client, make_run, dataset):
    a = make_run(TRUTH)
    other_seed = make_run(TRUTH, seed=1)
    res = client.get("/api/samples", params={"runs": _ids(a, other_seed)})
    assert res.status_code == 422 and "different rows" in res.json()["detail"] and "seed 1" in res.json()["detail"]
    other_share = make_run(TRUTH, eval_fraction=0.2)
    assert client.get("/api/samples", params={"runs": _ids(a, other_share)}).status_code == 422
    # A separate eval dataset: the same one lines up (whatever the split settings), another does not.
    e1 = make_run(TRUTH, eval_dataset_id=dataset["id"], seed=3)
    e2 = make_run(TRUTH, eval_dataset_id=dataset["id"], seed=4, eval_fraction=0.5)
    res = client.get("/api/samples", params={"runs": _ids(e1, e2)})
    assert res.status_code == 200 and res.json()["eval_set"] == f"eval dataset #{dataset['id']}"
    res = client.get("/api/samples", params={"runs": _ids(a, e1)})
    assert res.status_code == 422 and "eval dataset" in res.json()["detail"]


def test_runs_that_cannot_be_lined_up(client, make_run):
    a = make_run(TRUTH)
    causal = make_run(None, task="causal_lm")
    res = client.get("/api/samples", params={"runs": _ids(a, causal)})
    assert res.status_code == 422 and "causal_lm" in res.json()["detail"]
    bare = make_run(None)
    res = client.get("/api/samples", params={"runs": _ids(a, bare)})
    assert res.status_code == 422 and "no stored predictions" in res.json()["detail"]
    for bad in ("", "1,x", _ids(a, a), ",".join(str(i) for i in range(1, 23))):
        assert client.get("/api/samples", params={"runs": bad}).status_code == 422, bad
    assert client.get("/api/samples", params={"runs": _ids(a), "filter": "some"}).status_code == 422
    assert client.get("/api/samples", params={"runs": "98765"}).status_code == 404


def test_another_users_runs_are_not_found(client_as, make_run):
    a = make_run(TRUTH)
    res = client_as("bob-samples").get("/api/samples", params={"runs": _ids(a)})
    assert res.status_code == 404


def test_rows_every_seed_of_a_gets_right_and_every_seed_of_b_gets_wrong(client, make_run):
    # Rows 0..5; A's seeds are right on rows 0-3 (seed 1 also misses row 3), B's are wrong on 0, 1 and 3.
    flip = {"pos": "neg", "neg": "pos"}
    a = [make_run(TRUTH[:3] + [TRUTH[3], flip[TRUTH[4]], TRUTH[5]], seed=0),
         make_run(TRUTH[:3] + [flip[TRUTH[3]], TRUTH[4], TRUTH[5]], seed=1)]
    b = [make_run([flip[TRUTH[0]], flip[TRUTH[1]], TRUTH[2], flip[TRUTH[3]], TRUTH[4], TRUTH[5]], seed=0),
         make_run([flip[TRUTH[0]], flip[TRUTH[1]], flip[TRUTH[2]], flip[TRUTH[3]], TRUTH[4], TRUTH[5]], seed=1)]
    with session_scope() as s:  # one held-out set for every seed, as repeats make them
        for run_id in a + b:
            run = s.get(Run, run_id)
            run.config = {**run.config, "eval_split_seed": 0}
    res = client.get("/api/samples", params={"a": _ids(*a), "b": _ids(*b), "filter": "a_right_b_wrong"})
    assert res.status_code == 200, res.text
    data = res.json()
    assert [r["id"] for r in data["runs"]] == a + b and data["groups"] == {"a": a, "b": b}
    assert [r["row"] for r in data["rows"]] == [ROWS[0], ROWS[1]]  # row 2: one B seed right; row 3: one A seed wrong
    assert data["counts"]["a_right_b_wrong"] == 2 and data["counts"]["b_right_a_wrong"] == 0
    assert data["counts"]["all"] == 6
    reverse = client.get("/api/samples", params={"a": _ids(*b), "b": _ids(*a), "filter": "b_right_a_wrong"}).json()
    assert [r["row"] for r in reverse["rows"]] == [ROWS[0], ROWS[1]]
    plain = client.get("/api/samples", params={"runs": _ids(*a)}).json()
    assert plain["groups"] is None and "a_right_b_wrong" not in plain["counts"]


def test_group_filters_need_two_disjoint_groups(client, make_run):
    a, b = make_run(TRUTH), make_run(TRUTH)
    for params in ({"runs": _ids(a, b), "filter": "a_right_b_wrong"}, {"a": _ids(a)}, {"a": _ids(a), "b": _ids(a)},
                   {"runs": _ids(a), "a": _ids(a), "b": _ids(b)}):
        res = client.get("/api/samples", params=params)
        assert res.status_code == 422, params
        assert isinstance(res.json()["detail"], str)


# ---- GET /api/runs/{id}/confusion -------------------------------------------------------------

def test_confusion_matrix_and_per_class_scores(client, make_run):
    # truth pos neg pos neg pos neg, predicted pos pos pos neg neg neg
    run = make_run(["pos", "pos", "pos", "neg", "neg", "neg"])
    res = client.get(f"/api/runs/{run}/confusion")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["labels"] == ["neg", "pos"]
    assert body["matrix"] == [[2, 1], [1, 2]]  # rows: true, columns: predicted
    assert body["total"] == 6 and body["accuracy"] == pytest.approx(4 / 6)
    for scores in body["per_class"]:
        assert scores["support"] == 3
        assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
        assert scores["f1"] == pytest.approx(2 / 3)


def test_a_class_never_predicted_has_no_precision(client, make_run):
    run = make_run(["pos"] * 6)
    body = client.get(f"/api/runs/{run}/confusion").json()
    neg, pos = body["per_class"]
    assert neg == {"label": "neg", "precision": None, "recall": 0.0, "f1": 0.0, "support": 3}
    assert pos["precision"] == pytest.approx(0.5) and pos["recall"] == 1.0
    assert pos["f1"] == pytest.approx(2 / 3)
    assert body["matrix"] == [[0, 3], [0, 3]]


def test_confusion_needs_a_classification_run_with_predictions(client, client_as, make_run):
    causal = make_run(None, task="causal_lm")
    res = client.get(f"/api/runs/{causal}/confusion")
    assert res.status_code == 422 and "classification" in res.json()["detail"]
    bare = make_run(None)
    res = client.get(f"/api/runs/{bare}/confusion")
    assert res.status_code == 422 and "no stored predictions" in res.json()["detail"]
    assert client.get("/api/runs/98765/confusion").status_code == 404
    mine = make_run(TRUTH)
    assert client_as("bob-confusion").get(f"/api/runs/{mine}/confusion").status_code == 404
