"""The upload scanner's caps, bounded previews and row pages, robust listings, header detection."""
import gzip
import json
import threading
import time

import pytest
import sqlalchemy as sa

from app.config import Settings, get_settings

MB = 1024 * 1024


def _upload(client, filename: str, content: bytes, **fields):
    return client.post("/api/datasets", files={"file": (filename, content)}, data=fields)


def _leftovers(settings) -> list[str]:
    return sorted(p.name for p in settings.upload_dir.iterdir())


def _with_settings(app, settings, **changes) -> Settings:
    changed = Settings(**{**settings.model_dump(), **changes})
    app.dependency_overrides[get_settings] = lambda: changed
    return changed


def test_memory_cap_refuses_a_file_too_large_to_read(client, app, settings):
    # 10 million empty objects on one line: ~30 MB of text, several hundred MB once parsed.
    _with_settings(app, settings, scan_memory_bytes=512 * MB, max_line_bytes=64 * MB)
    before = _leftovers(settings)
    res = _upload(client, "many.jsonl", b'{"a": [' + b",".join([b"{}"] * 10_000_000) + b"]}\n")
    assert res.status_code == 422, res.text
    assert "too large to read within the scanner's memory limit of 512 MB" in res.json()["detail"]
    assert client.get("/api/me").status_code == 200
    assert _leftovers(settings) == before


def test_time_cap_refuses_a_file_too_slow_to_read(client, app, settings):
    _with_settings(app, settings, scan_timeout_seconds=1)
    before = _leftovers(settings)
    rows = gzip.compress(b'{"a": 1, "text": "a short row"}\n' * 3_000_000)  # 96 MB of rows, 0.2 MB of gzip
    answers = []
    uploader = threading.Thread(target=lambda: answers.append(_upload(client, "slow.jsonl.gz", rows)))
    uploader.start()
    while uploader.is_alive() and not answers:  # the server answers others while the scan runs
        assert client.get("/api/me").status_code == 200
        time.sleep(0.2)
    uploader.join()
    res = answers[0]
    assert res.status_code == 422, res.text
    assert "too slow to read" in res.json()["detail"]
    assert client.get("/api/me").status_code == 200
    assert _leftovers(settings) == before


def test_spawned_scanner_reads_the_same(client, app, settings):
    _with_settings(app, settings, scan_start_method="spawn")
    res = _upload(client, "s.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n')
    assert res.status_code == 201, res.text
    assert res.json()["num_rows"] == 2
    res = _upload(client, "deep.jsonl", b'{"t": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n")
    assert res.status_code == 422 and "nested too deeply" in res.json()["detail"]


def test_listing_carries_no_previews_and_detail_does(client):
    res = _upload(client, "p.jsonl", b'{"text": "hello"}\n')
    assert res.status_code == 201 and res.json()["preview"] == [{"text": "hello"}]
    listed = client.get("/api/datasets").json()
    assert listed and all("preview" not in d for d in listed)
    assert client.get(f"/api/datasets/{res.json()['id']}").json()["preview"] == [{"text": "hello"}]


def test_previews_cut_long_cells_with_a_marker(client, settings):
    res = _upload(client, "long.jsonl", json.dumps({"text": "x" * 5000, "n": 1}).encode() + b"\n")
    assert res.status_code == 201, res.text
    cell = res.json()["preview"][0]["text"]
    assert cell.startswith("x" * settings.preview_cell_chars) and cell.endswith("… [4,000 more characters]")
    page = client.get(f"/api/datasets/{res.json()['id']}/rows").json()
    assert page["rows"][0]["text"] == cell and page["rows"][0]["n"] == 1


def _store_bad_row(settings, preview_json: str, column_name: str) -> int:
    """A dataset row as an older version could have stored it (bypassing today's checks)."""
    from app.db import get_engine

    engine = get_engine()
    json_value = "CAST({} AS json)" if engine.dialect.name == "postgresql" else "{}"
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO datasets (name, format, has_header, num_rows, columns, preview, sha256, size_bytes, "
            f"storage_name, created_at) VALUES (:name, 'jsonl', NULL, 1, {json_value.format(':columns')}, "
            f"{json_value.format(':preview')}, :sha, 1, :storage, CURRENT_TIMESTAMP)"),
            {"name": "legacy", "columns": json.dumps([{"name": column_name, "dtype": "string"}]),
             "preview": preview_json, "sha": "0" * 64, "storage": f"legacy-{abs(hash(preview_json))}.jsonl"})
        return conn.execute(sa.text("SELECT max(id) FROM datasets")).scalar()


@pytest.mark.parametrize("preview, column", [
    ('[{"text": "bad \\ud800 here"}]', "te\\ud800xt"),  # a lone surrogate, as json.dumps stored it
    ("[{\"t\": " + "[" * 900 + "1" + "]" * 900 + "}]", "t"),  # deep, but within what the JSON decoder reads
    ("[{\"t\": " + "[" * 5000 + "1" + "]" * 5000 + "}]", "t"),  # deeper than the decoder goes
    (json.dumps([{"t": "y" * 3_000_000}] * 3), "t"),  # a huge stored preview
])
def test_stored_rows_of_any_shape_do_not_break_listings(client, settings, preview, column):
    dataset_id = _store_bad_row(settings, preview, json.loads(f'"{column}"'))
    try:
        listed = client.get("/api/datasets")
        assert listed.status_code == 200, listed.text[:300]
        assert len(listed.content) < 100_000 * max(1, len(listed.json()))
        detail = client.get(f"/api/datasets/{dataset_id}")
        assert detail.status_code == 200, detail.text[:300]
        assert len(detail.content) < 200_000
        assert "\ufffd" in detail.json()["columns"][0]["name"] or column == "t"
    finally:
        from app.db import get_engine

        with get_engine().begin() as conn:
            conn.execute(sa.text("DELETE FROM datasets WHERE id = :id"), {"id": dataset_id})


def test_rows_of_a_stored_file_with_a_huge_line_answer_422(client, settings):
    res = _upload(client, "ok.jsonl", b'{"text": "fine"}\n')
    assert res.status_code == 201
    stored = next(p for p in settings.upload_dir.iterdir() if p.name.startswith(res.json()["sha256"][:16]))
    # As an older version would have kept it: a gzip with one 100 MB line.
    with gzip.open(stored, "wb") as f:
        f.write(b'{"text": "')
        for _ in range(100):
            f.write(b"x" * MB)
        f.write(b'"}\n')
    page = client.get(f"/api/datasets/{res.json()['id']}/rows", params={"offset": 0, "limit": 5})
    assert page.status_code == 422 and "Line 1 is too large" in page.json()["detail"]


def test_wide_datasets_get_fewer_rows_per_page(client):
    header = ",".join(f"c{i}" for i in range(500))
    body = "\n".join(",".join(str(r * 1000 + i) for i in range(500)) for r in range(60))
    res = _upload(client, "wide.csv", f"{header}\n{body}\n".encode())
    assert res.status_code == 201, res.text
    page = client.get(f"/api/datasets/{res.json()['id']}/rows", params={"limit": 1000}).json()
    assert page["limit"] == 40 and len(page["rows"]) == 40


def test_row_pages_skip_to_an_offset(client):
    lines = b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(5000))
    res = _upload(client, "many.jsonl", lines)
    page = client.get(f"/api/datasets/{res.json()['id']}/rows", params={"offset": 4990, "limit": 50}).json()
    assert [r["i"] for r in page["rows"]] == list(range(4990, 5000))


def _labels_csv(header: bool, labels) -> bytes:
    lines = ["text,label"] if header else []
    lines += [f"some words about item {i},{label}" for i, label in enumerate(labels)]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("content, expected", [
    (_labels_csv(True, [f"label_{i}" for i in range(10_000)]), True),  # 10k distinct word labels, a header
    # 10k labels under a header, one-word texts: the old sniffer read this header as data
    (b"sentence,label\n" + b"".join(b"%s,%s%d\n" % (w, w, i) for i, w in
                                    enumerate([b"good", b"bad", b"fine", b"awful"] * 2500)), True),
    (_labels_csv(True, ["a"] * 10), True),  # short texts under a common name
    (_labels_csv(False, [f"label_{i}" for i in range(10_000)]), False),  # the same without the header
    (_labels_csv(False, [str(i) for i in range(10_000)]), False),  # numeric labels, first row is data
    (b"hi,pos\n" + b"".join(b"a much longer sentence than the first one %d,neg\n" % i for i in range(20)), False),
    (b"title,body\n" + b"".join(b"t%d,a body of text with spaces %d\n" % (i, i) for i in range(20)), True),
])
def test_header_detection(client, content, expected):
    res = _upload(client, "labels.csv", content)
    assert res.status_code == 201, res.text
    assert res.json()["has_header"] is expected


def test_a_5000_digit_csv_cell_is_kept_as_text(client):
    res = _upload(client, "digits.csv", b"text,n\nhello," + b"9" * 5000 + b"\nworld,1\n")
    assert res.status_code == 201, res.text
    assert {c["name"]: c["dtype"] for c in res.json()["columns"]}["n"] == "string"
    assert res.json()["preview"][0]["n"].startswith("999")


def test_lone_surrogate_is_refused_naming_the_row(client, settings):
    before = _leftovers(settings)
    res = _upload(client, "s.jsonl", b'{"a": "ok"}\n{"a": "ok"}\n{"a": "x\\udfff"}\n')
    assert res.status_code == 422 and res.json()["detail"].startswith("Line 3:")
    assert _leftovers(settings) == before
    assert client.get("/api/datasets").status_code == 200


def test_uploads_beyond_the_scan_slots_get_503_not_a_pile_of_threads(client, app, settings, monkeypatch):
    from app.datasets import sandbox

    monkeypatch.setattr(sandbox, "SLOT_WAIT_SECONDS", 0.5)
    _with_settings(app, settings, scan_concurrency=1)
    before = _leftovers(settings)
    slot = sandbox._slot(1)
    assert slot.acquire(timeout=5)  # another upload's scan holds the only slot
    try:
        res = _upload(client, "waiting.jsonl", b'{"a": 1}\n')
    finally:
        slot.release()
    assert res.status_code == 503 and "try again" in res.json()["detail"]
    assert res.headers["retry-after"] == "60"
    assert _leftovers(settings) == before
    assert _upload(client, "now.jsonl", b'{"a": 1}\n').status_code == 201
