"""Browser tests of the pages, in headless Chromium against the real stack.

Fixtures from tests/conftest.py: `live_stack` (a running server + one Celery worker; `.url`,
`.headers`) and `tiny_bert_source`; `page` (signed in) from tests/e2e/conftest.py.
"""
import csv
import io
import re
import uuid

import pytest

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

# A cell that would run code if any page inserted data as HTML.
XSS_CELL = '<img src=x onerror="window.__pwned=1"> bad film'


def review_csv(rows: int = 60) -> bytes:
    good = ["good movie", "a great film", "wonderful acting", "loved every minute", "truly delightful"]
    bad = ["bad film", "a terrible movie", "boring plot", "hated every minute", "truly awful"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["text", "label"])
    w.writerow([XSS_CELL, "neg"])
    for i in range(rows - 1):
        if i % 2:
            w.writerow([f"{bad[i % 5]} number {i}", "neg"])
        else:
            w.writerow([f"{good[i % 5]} number {i}", "pos"])
    return out.getvalue().encode()


def upload_via_api(api, name: str) -> dict:
    resp = api.post("/api/datasets", files={"file": ("reviews.csv", review_csv(), "text/csv")},
                    data={"name": name, "format": "csv", "has_header": "true"})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_upload_csv_shows_dataset_detail(page, tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes(review_csv())
    name = f"reviews-{uuid.uuid4().hex[:6]}"

    page.goto("/datasets")
    page.set_input_files("#upload-file", str(path))
    expect(page.locator("#dropzone")).to_contain_text("reviews.csv")
    page.fill("#upload-name", name)
    page.select_option("#upload-header", "true")
    page.click("#upload-submit")

    page.wait_for_url(re.compile(r"/datasets/\d+$"))
    expect(page.locator("#dataset-name")).to_have_text(name)
    expect(page.locator("#stat-rows")).to_have_text("60")
    expect(page.locator("#columns-list .column-name")).to_have_text(["text", "label"])
    expect(page.locator("#rows-body tr")).to_have_count(20)
    # The hostile cell shows as text and never ran.
    expect(page.locator("#rows-body")).to_contain_text(XSS_CELL)
    assert page.evaluate("window.__pwned") is None
    expect(page.locator("#new-run-link")).to_have_attribute("href", re.compile(r"/runs/new\?dataset_id=\d+"))


def test_lora_run_streams_to_success(page, api, model_id):
    dataset = upload_via_api(api, f"reviews-run-{uuid.uuid4().hex[:6]}")

    page.goto("/runs/new")
    page.select_option("#run-dataset", str(dataset["id"]))
    page.select_option("#run-model", str(model_id))
    page.select_option("#run-task", "classification")
    page.select_option("#col-text", "text")
    page.select_option("#col-label", "label")
    page.check("input[name=method][value=lora]")
    page.fill("#run-name", "e2e lora")
    page.fill("#tr-max_steps", "8")
    page.fill("#tr-batch_size", "8")
    page.fill("#tr-eval_every", "4")
    page.fill("#tr-max_length", "32")
    page.click("#run-submit")

    page.wait_for_url(re.compile(r"/runs/\d+$"))
    run_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    expect(page.locator("#run-status .badge")).to_have_text("succeeded", timeout=120_000)
    # The loss chart was drawn by uPlot from streamed points.
    page.wait_for_function(
        "() => { const c = document.querySelector('#chart-loss');"
        " return c && c.querySelector('canvas') && Number(c.dataset.points) > 0; }",
        timeout=15_000,
    )
    assert int(page.get_attribute("#chart-loss", "data-series-count")) >= 1
    link = page.locator("#download-adapter")
    expect(link).to_be_visible()
    expect(link).to_have_attribute("href", f"/api/runs/{run_id}/adapter")
    expect(page.locator("#summary-body")).to_contain_text("Trainable parameters")

    run = api.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "succeeded"
    assert run["config"]["training"]["batch_size"] == 8
    assert run["config"]["method"]["type"] == "lora"


def test_empty_upload_shows_server_message(page, api, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    server = api.post("/api/datasets", files={"file": ("empty.csv", b"", "text/csv")})
    assert 400 <= server.status_code < 500
    detail = server.json()["detail"]

    page.goto("/datasets")
    page.set_input_files("#upload-file", str(empty))
    page.click("#upload-submit")

    error = page.locator("#upload-error")
    expect(error).to_be_visible()
    if isinstance(detail, str):
        expect(error).to_contain_text(detail)
    else:
        expect(error).not_to_be_empty()
    assert page.url.endswith("/datasets")


def test_invalid_batch_size_shows_field_error(page, api, model_id):
    dataset = upload_via_api(api, f"reviews-bad-{uuid.uuid4().hex[:6]}")
    runs_before = len(api.get("/api/runs").json())

    page.goto(f"/runs/new?dataset_id={dataset['id']}")
    expect(page.locator("#run-dataset")).to_have_value(str(dataset["id"]))
    page.select_option("#run-model", str(model_id))
    page.fill("#tr-batch_size", "0")
    page.click("#run-submit")

    field_error = page.locator('.field:has(#tr-batch_size) .field-error')
    expect(field_error).to_be_visible()
    expect(field_error).to_contain_text("greater than or equal to 1")
    expect(page.locator("#tr-batch_size")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#form-summary")).to_be_visible()
    assert page.url.endswith(f"/runs/new?dataset_id={dataset['id']}")
    assert len(api.get("/api/runs").json()) == runs_before
