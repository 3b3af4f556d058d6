"""The New run form's Early stopping block and what the run page says about checkpoints: the best
step, stopping early, both downloads, and a resumed attempt. Headless Chromium, real stack."""
import re
import uuid

import pytest
from sqlalchemy import update

from tests.e2e.test_ui_pages import upload_via_api

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def dataset(api):
    return upload_via_api(api, f"reviews-early-{uuid.uuid4().hex[:6]}")


def test_early_stopping_from_the_form_to_the_run_page(page, api, dataset, model_id):
    runs_before = len(api.get("/api/runs").json())
    page.goto(f"/runs/new?dataset_id={dataset['id']}")
    expect(page.locator("#run-dataset")).to_have_value(str(dataset["id"]))
    page.select_option("#run-model", model_id)
    expect(page.locator("#early-stopping-title")).to_have_text("Early stopping")
    # Classification offers accuracy and F1, not perplexity.
    expect(page.locator("#tr-metric_for_best option[value='eval/perplexity']")).to_be_disabled()
    expect(page.locator("#tr-metric_for_best option[value='eval/f1']")).to_be_enabled()

    # Patience without a metric: refused beside the field, nothing queued.
    page.fill("#tr-early_stopping_patience", "2")
    page.click("#run-submit")
    expect(page.locator(".field:has(#tr-early_stopping_patience) .field-error")).to_contain_text(
        "needs training.metric_for_best")
    assert len(api.get("/api/runs").json()) == runs_before

    # A learning rate too small to change a prediction: accuracy never beats the first evaluation.
    page.select_option("#tr-metric_for_best", "eval/accuracy")
    for field, value in {"learning_rate": "1e-9", "max_steps": "100", "batch_size": "8", "eval_every": "4",
                         "max_length": "32", "checkpoint_every": "0"}.items():
        page.fill(f"#tr-{field}", value)
    page.fill("#run-name", "early stop")
    page.click("#run-submit")
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    run_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    expect(page.locator("#run-status .badge")).to_have_text("succeeded", timeout=180_000)
    run = api.get(f"/api/runs/{run_id}").json()
    assert run["config"]["training"]["metric_for_best"] == "eval/accuracy"
    assert (run["summary"]["best_step"], run["summary"]["steps"], run["summary"]["stopped_early"]) == (4, 12, True)

    summary = page.locator("#summary-body")
    expect(summary).to_contain_text("Best checkpoint")
    expect(summary).to_contain_text("step 4 by eval/accuracy")
    expect(summary).to_contain_text("Stopped early")
    expect(page.locator("#download-adapter")).to_have_text("Download adapter (best, step 4)")
    last = page.locator("#download-adapter-last")
    expect(last).to_have_text("Download last weights (step 12)")
    assert api.get(last.get_attribute("href")).headers["content-type"] == "application/zip"

    # A run the worker resumed says so under its name and in its summary.
    from app.db import session_scope
    from app.runs.models import Run

    with session_scope() as s:
        s.execute(update(Run).where(Run.id == run_id).values(
            attempts=2, summary={**run["summary"], "resumed_from": {"step": 8, "attempt": 2}}))
        s.commit()
    page.reload()
    expect(page.locator("#run-subtitle")).to_contain_text("resumed from step 8 (attempt 2)")
    expect(summary).to_contain_text("Resumed")
