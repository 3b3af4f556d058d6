"""The New run form's Quantised base choice: refused beside the field for a method that trains the base's
own weights, sent for LoRA, prefilled when a run is cloned; the Workers page says what each worker can
quantise; the Models page says why a hub id cannot be checked. Headless Chromium against the real stack."""
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
    return upload_via_api(api, f"reviews-quant-{uuid.uuid4().hex[:6]}")


def test_quantisation_is_offered_refused_beside_its_field_and_sent(page, api, dataset, model_id):
    runs_before = len(api.get("/api/runs").json())
    open_form(page, dataset, model_id)
    field = page.locator(".field:has(#tr-quantization)")
    expect(page.locator("#tr-quantization")).to_have_value("")
    expect(field.locator(".hint")).to_contain_text("LoRA")  # the methods whose spec takes a quantised base
    expect(field.locator(".hint")).not_to_contain_text("Full fine-tuning")

    page.check("input[name=method][value=full]")
    page.select_option("#tr-quantization", "4bit")
    page.click("#run-submit")
    expect(field.locator(".field-error")).to_contain_text("cannot train on a quantised base")
    expect(field.locator(".field-error")).to_contain_text("method full")
    assert len(api.get("/api/runs").json()) == runs_before

    page.check("input[name=method][value=lora]")
    for name, value in TRAINING.items():
        page.fill(f"#tr-{name}", str(value))
    page.click("#run-submit")
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    run_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    assert api.get(f"/api/runs/{run_id}").json()["config"]["training"]["quantization"] == "4bit"
    api.post(f"/api/runs/{run_id}/cancel")

    page.goto(f"/runs/new?clone={run_id}")  # a clone keeps the choice
    expect(page.locator("#tr-quantization")).to_have_value("4bit")


def test_the_workers_page_lists_what_a_worker_can_quantise(page):
    page.goto("/workers")
    row = page.locator("#workers-body tr[data-worker]").first
    expect(row).to_be_visible(timeout=60_000)
    expect(row.locator(".quantization")).to_contain_text("quantisation: 4bit, 8bit")


def test_the_models_page_says_why_a_hub_id_cannot_be_checked(page, api):
    """The test stack runs with HF_HUB_OFFLINE: registering a hub id is refused at once, with the way out."""
    before = len(api.get("/api/models").json())
    page.goto("/models")
    page.fill("#model-name", "Llama from the hub")
    page.fill("#model-source", "meta-llama/Llama-3.2-1B")
    page.click("#model-submit")
    error = page.locator("#model-form-error")
    expect(error).to_contain_text("cannot be reached")
    expect(error).to_contain_text("peftlab models import")
    assert len(api.get("/api/models").json()) == before
