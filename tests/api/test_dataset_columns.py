"""Naming a headerless CSV's columns (PATCH /api/datasets/{id}) and a column's value distribution
(GET /api/datasets/{id}/distribution)."""
import json

import pytest

from app.datasets.reader import iter_rows

# AG News style: label 1-4, title, description, no header row.
AG_ROWS = [(str(1 + i % 4), f"title {i}", f"description of item {i}") for i in range(40)]


def _headerless(client, rows=AG_ROWS, name="ag headerless"):
    csv = "".join(",".join(r) + "\n" for r in rows)
    res = client.post("/api/datasets", files={"file": ("ag.csv", csv.encode())},
                      data={"has_header": "false", "name": name})
    assert res.status_code == 201, res.text
    return res.json()


@pytest.fixture
def created(client):
    ids: list[int] = []
    yield ids
    for run_id in ids:
        client.post(f"/api/runs/{run_id}/cancel")
        client.delete(f"/api/runs/{run_id}")


def test_naming_the_columns_of_a_headerless_csv_applies_everywhere_rows_are_read(client, settings):
    ds = _headerless(client)
    assert [c["name"] for c in ds["columns"]] == ["column_1", "column_2", "column_3"]
    res = client.patch(f"/api/datasets/{ds['id']}", json={"columns": ["label", "title", "description"]})
    assert res.status_code == 200, res.text
    out = res.json()
    assert [c["name"] for c in out["columns"]] == ["label", "title", "description"]
    assert out["column_names"] == {"column_1": "label", "column_2": "title", "column_3": "description"}
    assert out["preview"][0] == {"label": "1", "title": "title 0", "description": "description of item 0"}
    rows = client.get(f"/api/datasets/{ds['id']}/rows?offset=38&limit=5").json()["rows"]
    assert rows == [{"label": "3", "title": "title 38", "description": "description of item 38"},
                    {"label": "4", "title": "title 39", "description": "description of item 39"}]
    again = client.get(f"/api/datasets/{ds['id']}").json()
    assert again["preview"][1]["title"] == "title 1" and again["columns"] == out["columns"]

    # The mapping form renames some columns by their current names; the stored mapping stays file → shown.
    res = client.patch(f"/api/datasets/{ds['id']}", json={"columns": {"description": "text"}})
    assert res.status_code == 200, res.text
    assert res.json()["column_names"] == {"column_1": "label", "column_2": "title", "column_3": "text"}
    # Back to a file's own name: it leaves the mapping.
    res = client.patch(f"/api/datasets/{ds['id']}", json={"columns": {"title": "column_2"}})
    assert res.json()["column_names"] == {"column_1": "label", "column_3": "text"}

    # What the worker reads (reader.iter_rows with the stored mapping, as workers/tasks.py calls it).
    from app.datasets.models import Dataset
    from app.db import session_scope

    with session_scope() as session:
        stored = session.get(Dataset, ds["id"])
        path, fmt, has_header, names = (settings.upload_dir / stored.storage_name, stored.format,
                                        stored.has_header, stored.column_names)
    first = next(iter(iter_rows(path, fmt, has_header, column_names=names)))
    assert first == {"label": "1", "column_2": "title 0", "text": "description of item 0"}

    # A run config names the new names.
    body = {"dataset_id": ds["id"], "base_model": "minilm-l6", "columns": {"text": "text", "label": "label"},
            "method": {"type": "lora"}, "training": {"max_steps": 2}}
    res = client.post("/api/runs", json=body)
    assert res.status_code == 201, res.text
    run_id = res.json()["id"]
    try:  # while it is queued, renaming would pull its columns away
        res = client.patch(f"/api/datasets/{ds['id']}", json={"columns": {"text": "body"}})
        assert res.status_code == 409 and f"Runs {run_id}" in res.json()["detail"]
    finally:
        client.post(f"/api/runs/{run_id}/cancel")
        client.delete(f"/api/runs/{run_id}")


@pytest.mark.parametrize("columns, message", [
    (["a", "b"], "Give 3 names"),
    (["a", "a", "b"], "Columns 1 and 2 would both be called 'a'"),
    ({"column_2": "column_1"}, "Columns 1 and 2 would both be called 'column_1'"),
    (["a", "  ", "b"], "Column 2's new name is empty"),
    (["a", "b", "x" * 201], "at most 200"),
    ({"nope": "x"}, "There is no column 'nope'"),
])
def test_bad_names_are_refused_with_a_reason(client, columns, message):
    ds = _headerless(client)
    res = client.patch(f"/api/datasets/{ds['id']}", json={"columns": columns})
    assert res.status_code == 422 and message in json.dumps(res.json()["detail"]), res.text
    assert [c["name"] for c in client.get(f"/api/datasets/{ds['id']}").json()["columns"]][0] == "column_1"


@pytest.mark.parametrize("body", [{}, {"columns": 5}, {"columns": [1, 2, 3]}, {"columns": {"column_1": None}},
                                  {"columns": ["a", "b", "c"], "name": "x"}])
def test_malformed_bodies_are_422(client, body):
    ds = _headerless(client)
    assert client.patch(f"/api/datasets/{ds['id']}", json=body).status_code == 422


def test_someone_elses_dataset_cannot_be_renamed_or_counted(client, client_as):
    ds = _headerless(client)
    other = client_as("mallory-columns")
    assert other.patch(f"/api/datasets/{ds['id']}", json={"columns": ["a", "b", "c"]}).status_code == 404
    assert other.get(f"/api/datasets/{ds['id']}/distribution?column=column_1").status_code == 404


def test_distribution_counts_the_most_common_values_and_the_rest(client):
    rows = [("1", "t", "d")] * 30 + [("2", "t", "d")] * 20 + [(f"rare{i}", "t", "d") for i in range(70)] + [("", "t", "d")] * 5
    ds = _headerless(client, rows, name="skewed")
    res = client.get(f"/api/datasets/{ds['id']}/distribution", params={"column": "column_1"})
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["total_rows"] == out["rows_counted"] == 125 and out["complete"] is True
    assert out["values"][:2] == [{"value": "1", "count": 30}, {"value": "2", "count": 20}]
    assert len(out["values"]) == 50 and all(v["count"] == 1 for v in out["values"][2:])
    assert out["missing"] == 5 and out["distinct"] == 72 and out["other"] == 22 and out["untracked"] == 0
    # By its new name after a rename.
    client.patch(f"/api/datasets/{ds['id']}", json={"columns": {"column_1": "label"}})
    out = client.get(f"/api/datasets/{ds['id']}/distribution", params={"column": "label"}).json()
    assert out["values"][0] == {"value": "1", "count": 30}
    res = client.get(f"/api/datasets/{ds['id']}/distribution", params={"column": "column_1"})
    assert res.status_code == 422 and "There is no column 'column_1'" in res.json()["detail"]
    assert client.get(f"/api/datasets/{ds['id']}/distribution").status_code == 422  # column is required


def test_distribution_bounds_distinct_values_and_time(client, settings):
    from app.datasets.distribution import distribution
    from app.datasets.models import Dataset
    from app.db import session_scope

    rows = [(f"v{i % 7}", "t", "d") for i in range(3000)]
    ds = _headerless(client, rows, name="bounded")
    with session_scope() as session:
        stored = session.get(Dataset, ds["id"])
        capped = distribution(settings, stored, "column_1", max_distinct=3)
        assert len(capped.counts) == 3 and capped.untracked == 3000 - sum(capped.counts.values())
        assert capped.other() == 3000 - sum(n for _, n in capped.top())
        stopped = distribution(settings, stored, "column_1", max_seconds=0)
        assert stopped.complete is False and stopped.rows_counted == 1024
