"""Uploading datasets: every format, and every kind of bad file refused with nothing left behind."""
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.config import Settings, get_settings

ROWS = [{"text": f"sentence number {i}", "label": "pos" if i % 2 else "neg", "score": i / 2} for i in range(30)]


def _upload(client, filename: str, content: bytes, **fields):
    return client.post("/api/datasets", files={"file": (filename, content)}, data=fields)


def _leftovers(settings) -> list[str]:
    return sorted(p.name for p in settings.upload_dir.iterdir())


def _csv(sep: str, header: bool) -> bytes:
    lines = [sep.join(["text", "label", "score"])] if header else []
    lines += [sep.join([r["text"], r["label"], str(r["score"])]) for r in ROWS]
    return ("\n".join(lines) + "\n").encode()


def _parquet() -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(ROWS), buf)
    return buf.getvalue()


@pytest.mark.parametrize("name, content, fmt", [
    ("d.jsonl", "\n".join(json.dumps(r) for r in ROWS).encode(), "jsonl"),
    ("d.json", json.dumps(ROWS).encode(), "json"),
    ("d.csv", _csv(",", True), "csv"),
    ("d.tsv", _csv("\t", True), "tsv"),
    ("d.parquet", _parquet(), "parquet"),
    ("noextension", "\n".join(json.dumps(r) for r in ROWS).encode(), "jsonl"),
])
def test_upload_each_format(client, name, content, fmt):
    res = _upload(client, name, content)
    assert res.status_code == 201, res.text
    body = res.json()
    assert body["format"] == fmt
    assert body["num_rows"] == 30
    assert [c["name"] for c in body["columns"]] == ["text", "label", "score"]
    dtypes = {c["name"]: c["dtype"] for c in body["columns"]}
    assert dtypes["text"] == "string" and dtypes["score"] == "float"
    assert len(body["preview"]) == 20 and body["preview"][3]["text"] == "sentence number 3"
    assert body["size_bytes"] == len(content) and len(body["sha256"]) == 64
    page = client.get(f"/api/datasets/{body['id']}/rows", params={"offset": 25, "limit": 10}).json()
    assert [r["text"] for r in page["rows"]] == [f"sentence number {i}" for i in range(25, 30)]
    assert page["total"] == 30


def test_csv_without_header_gets_generated_column_names(client):
    res = _upload(client, "plain.csv", _csv(",", False), has_header="false")
    assert res.status_code == 201, res.text
    body = res.json()
    assert [c["name"] for c in body["columns"]] == ["column_1", "column_2", "column_3"]
    assert body["num_rows"] == 30 and body["has_header"] is False


def test_csv_header_is_sniffed(client):
    assert _upload(client, "h.csv", _csv(",", True)).json()["has_header"] is True


def test_name_and_declared_format(client):
    res = _upload(client, "data.txt", _csv("\t", True), name="  my set ", format="tsv")
    assert res.status_code == 201
    assert res.json()["name"] == "my set" and res.json()["format"] == "tsv"


@pytest.mark.parametrize("name, content, message", [
    ("empty.csv", b"", "empty"),
    ("bad.jsonl", b'{"text": "ok"}\n{"text": broken\n', "Line 2 is not valid JSON"),
    ("list.jsonl", b'{"a": 1}\n[1, 2]\n', "Line 2 is not a JSON object"),
    ("bad.json", b'[{"a": 1}, {"a": ', "not valid JSON"),
    ("obj.json", b'{"a": 1}', "array of objects"),
    ("binary.csv", bytes(range(256)) * 4, "binary"),
    ("latin1.csv", "text,label\ncaf\u00e9,1\n".encode("latin-1"), "not valid UTF-8"),
    ("header-only.csv", b"text,label\n", "no rows"),
    ("empty-array.json", b"[]", "no rows"),
    ("ragged.csv", b"a,b\n1,2\n3\n", "Line 3 has 1 fields"),
    ("fake.parquet", b"PAR1 this is not parquet", "Parquet"),
])
def test_bad_files_are_refused_and_leave_nothing(client, settings, name, content, message):
    before_files, before_rows = _leftovers(settings), len(client.get("/api/datasets").json())
    res = _upload(client, name, content)
    assert res.status_code in (400, 413, 415, 422), res.text
    assert message in res.json()["detail"]
    assert _leftovers(settings) == before_files
    assert len(client.get("/api/datasets").json()) == before_rows


def test_over_the_size_limit_is_refused(client, app, settings):
    small = Settings(**{**settings.model_dump(), "max_upload_bytes": 1000})
    app.dependency_overrides[get_settings] = lambda: small
    before = _leftovers(settings)
    res = _upload(client, "big.jsonl", b'{"text": "x"}\n' * 500)
    assert res.status_code == 413
    assert "upload limit" in res.json()["detail"]
    assert _leftovers(settings) == before


def test_not_multipart_and_missing_file(client):
    res = client.post("/api/datasets", content=b"text,label\n", headers={"content-type": "text/csv"})
    assert res.status_code == 415
    res = client.post("/api/datasets", data={"name": "x"}, files={"other": ("a.csv", b"a\n1\n")})
    assert res.status_code == 400 and "field 'file'" in res.json()["detail"]


def test_unknown_declared_format(client):
    res = _upload(client, "d.csv", _csv(",", True), format="xlsx")
    assert res.status_code == 422 and "Unknown format" in res.json()["detail"]


def test_get_missing_and_delete(client, settings):
    assert client.get("/api/datasets/999999").status_code == 404
    ds = _upload(client, "del.csv", _csv(",", True)).json()
    stored = [p for p in settings.upload_dir.iterdir() if p.name.endswith(".csv")]
    assert client.delete(f"/api/datasets/{ds['id']}").status_code == 204
    assert client.get(f"/api/datasets/{ds['id']}").status_code == 404
    assert len([p for p in settings.upload_dir.iterdir() if p.name.endswith(".csv")]) == len(stored) - 1


@pytest.mark.parametrize("content, expected", [
    (b"text,label\n" + b"".join(b"a rather long sentence about the news number %d,World\n" % i for i in range(10)), True),
    (b"name,score\n" + b"".join(b"item%d,%d\n" % (i, i) for i in range(10)), True),
    (b"".join(b'"3","Wall St. Bears Claw Back Into the Black %d","Reuters - short-sellers are back"\n' % i for i in range(10)), False),
    (b"".join(b"%d,%d\n" % (i, i * 2) for i in range(10)), False),
])
def test_header_detection_on_text_datasets(client, content, expected):
    res = _upload(client, "sniff.csv", content)
    assert res.status_code == 201, res.text
    assert res.json()["has_header"] is expected


def test_gzip_files_are_read(client):
    import gzip

    rows = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    res = _upload(client, "d.jsonl.gz", gzip.compress(rows))
    assert res.status_code == 201, res.text
    assert res.json()["format"] == "jsonl" and res.json()["num_rows"] == 30
    page = client.get(f"/api/datasets/{res.json()['id']}/rows", params={"limit": 2}).json()
    assert page["rows"][1]["text"] == "sentence number 1"
    # (a "zip bomb" is in the hostile corpus: tests/api/test_hostile_datasets.py)
    res = _upload(client, "broken.csv.gz", gzip.compress(_csv(",", True))[:-20])
    assert res.status_code == 422 and "damaged" in res.json()["detail"]


def test_nan_values_are_shown_as_empty(client):
    import math

    table = pa.Table.from_pylist([{"text": "a", "score": math.nan}, {"text": "b", "score": 1.5}])
    buf = io.BytesIO()
    pq.write_table(table, buf)
    res = _upload(client, "nan.parquet", buf.getvalue())
    assert res.status_code == 201, res.text
    assert res.json()["preview"][0]["score"] is None
    assert {c["name"]: c["dtype"] for c in res.json()["columns"]}["score"] == "float"
    res = _upload(client, "nan.jsonl", b'{"text": "a", "score": NaN}\n{"text": "b", "score": 2.0}\n')
    assert res.status_code == 201 and res.json()["preview"][0]["score"] is None
