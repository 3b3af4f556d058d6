"""columns.label_names at POST /api/runs (checked against the dataset's label values) and in the
confusion matrix (classes in the order the names were given)."""
import json

import pytest

from app.artifacts.service import record_artifact, run_artifact_dir
from app.datasets.models import Dataset
from app.db import session_scope
from app.runs.models import Run

AG = ["World", "Sports", "Business", "Sci/Tech"]


@pytest.fixture
def dataset(client):
    csv = "".join(f"{1 + i % 4},title {i},text {i}\n" for i in range(40))
    ds = client.post("/api/datasets", files={"file": ("ag.csv", csv.encode())}, data={"has_header": "false"}).json()
    return client.patch(f"/api/datasets/{ds['id']}", json={"columns": ["label", "title", "text"]}).json()


@pytest.fixture
def created(client):
    ids: list[int] = []
    yield ids
    for run_id in ids:
        client.post(f"/api/runs/{run_id}/cancel")
        client.delete(f"/api/runs/{run_id}")


def _body(dataset_id, label_names, **over):
    body = {"dataset_id": dataset_id, "base_model": "minilm-l6", "task": "classification",
            "columns": {"text": "text", "label": "label", "label_names": label_names},
            "method": {"type": "lora"}, "training": {"max_steps": 2}}
    body.update(over)
    return body


@pytest.mark.parametrize("label_names", [AG, {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"},
                                         {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech", "5": "Spare"}])
def test_names_that_cover_the_labels_are_stored_with_the_run(client, dataset, created, label_names):
    res = client.post("/api/runs", json=_body(dataset["id"], label_names))
    assert res.status_code == 201, res.text
    created.append(res.json()["id"])
    assert res.json()["config"]["columns"]["label_names"] == label_names


@pytest.mark.parametrize("label_names, message", [
    (AG[:3], "3 class names for 4 label values ('1', '2', '3', '4')"),
    ({"1": "World", "2": "Sports"}, "no class name for the label value(s) '3', '4'"),
    (["World", "World", "Business", "Sci/Tech"], "class names must be unique"),
    (["World", "", "Business", "Sci/Tech"], "must not be blank"),
    ([], "at least one class name"),
    (["x" * 201] * 4, "at most 200 characters"),
    ([f"c{i}" for i in range(1001)], "at most 1000 items"),
    ("World,Sports", "valid list"),
])
def test_names_that_do_not_fit_are_422_at_submit(client, dataset, label_names, message):
    runs_before = len(client.get("/api/runs").json())
    res = client.post("/api/runs", json=_body(dataset["id"], label_names))
    assert res.status_code == 422, res.text
    detail = res.json()["detail"]
    assert any(e["loc"][:3] == ["body", "columns", "label_names"] for e in detail), detail
    assert message in json.dumps(detail), detail
    assert len(client.get("/api/runs").json()) == runs_before  # nothing queued


def test_only_classification_has_class_names(client, dataset):
    res = client.post("/api/runs", json=_body(dataset["id"], AG, task="causal_lm"))
    assert res.status_code == 422 and "only classification runs" in json.dumps(res.json()["detail"])


def test_the_confusion_matrix_follows_the_names_order(client, dataset, settings):
    config = _body(dataset["id"], AG)
    with session_scope() as s:
        project_id = s.get(Dataset, dataset["id"]).project_id
        run = Run(name="named", status="succeeded", config=config, summary={}, dataset_id=dataset["id"],
                  base_model="minilm-l6", method="lora", task="classification", project_id=project_id)
        s.add(run)
        s.flush()
        run_id = run.id
    try:
        path = run_artifact_dir(settings, run_id, "predictions") / "predictions.jsonl"
        pairs = [("World", "World"), ("Sports", "World"), ("Business", "Business"), ("Sci/Tech", "Sci/Tech")]
        path.write_text("".join(json.dumps({"row": i, "label": t, "prediction": p, "probs": [0.25] * 4}) + "\n"
                                for i, (t, p) in enumerate(pairs)))
        with session_scope() as s:
            record_artifact(s, run_id, "predictions", path)
        body = client.get(f"/api/runs/{run_id}/confusion").json()
        assert body["labels"] == AG  # not alphabetical
        assert body["matrix"][1] == [1, 0, 0, 0]  # Sports predicted as World
    finally:
        client.delete(f"/api/runs/{run_id}")
