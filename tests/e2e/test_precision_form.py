"""The New run form's Precision, Gradient checkpointing, Pack examples, length grouping, eval batch and compile settings (sent, refused beside
their field where they cannot work), and the Workers page, in headless Chromium against the real stack."""
import re
import uuid

import pytest

from tests.e2e.test_run_form import TRAINING, open_form
from tests.e2e.test_ui_pages import upload_via_api

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def dataset(api):
    return upload_via_api(api, f"reviews-precision-{uuid.uuid4().hex[:6]}")


def test_memory_settings_are_sent_and_refused_beside_their_field(page, api, dataset, model_id):
    runs_before = len(api.get("/api/runs").json())
    open_form(page, dataset, model_id)
    page.check("input[name=method][value=prefix]")
    page.check("#tr-gradient_checkpointing")
    page.click("#run-submit")
    expect(page.locator('.field:has(#tr-gradient_checkpointing) .field-error')).to_contain_text(
        "cannot use gradient checkpointing")
    page.uncheck("#tr-gradient_checkpointing")
    page.check("input[name=method][value=lora]")
    page.select_option("#tr-packing", "true")
    page.click("#run-submit")
    expect(page.locator('.field:has(#tr-packing) .field-error')).to_contain_text("packing is for causal_lm")
    assert len(api.get("/api/runs").json()) == runs_before

    page.select_option("#tr-packing", "")
    expect(page.locator("#tr-group_by_length")).to_be_checked()  # on by default
    page.uncheck("#tr-group_by_length")
    page.fill("#tr-eval_batch_size", "64")
    page.check("#tr-compile")
    page.check("#tr-gradient_checkpointing")
    page.select_option("#tr-precision", "bf16")
    for field, value in TRAINING.items():
        page.fill(f"#tr-{field}", str(value))
    page.click("#run-submit")
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    run_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    training = api.get(f"/api/runs/{run_id}").json()["config"]["training"]
    assert training["precision"] == "bf16" and training["gradient_checkpointing"] is True
    assert training["packing"] is None  # auto
    assert training["group_by_length"] is False and training["eval_batch_size"] == 64 and training["compile"] is True
    api.post(f"/api/runs/{run_id}/cancel")


def test_the_workers_page_shows_the_running_worker(page):
    page.goto("/workers")
    rows = page.locator("#workers-body tr[data-worker]")
    expect(rows.first).to_be_visible(timeout=60_000)
    expect(rows.first.locator("td").nth(1)).to_contain_text("CPU")
    expect(page.locator('nav a[href="/workers"]')).to_have_attribute("aria-current", re.compile(".+"))
