"""The New run form's GPUs field and multi-GPU strategy: sent with the run, and refused beside their field
with the server's words, in headless Chromium against the real stack."""
import uuid

import pytest

from tests.e2e.test_run_form import open_form
from tests.e2e.test_ui_pages import upload_via_api

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def dataset(api):
    return upload_via_api(api, f"reviews-gpus-{uuid.uuid4().hex[:6]}")


def test_gpus_and_strategy_are_refused_beside_their_fields(page, api, dataset, model_id):
    runs_before = len(api.get("/api/runs").json())
    open_form(page, dataset, model_id)
    expect(page.locator("#tr-gpus")).to_have_value("1")
    expect(page.locator("#tr-distributed")).to_have_value("ddp")
    page.check("input[name=method][value=prompt]")
    page.fill("#tr-gpus", "2")
    page.select_option("#tr-distributed", "fsdp")
    page.click("#run-submit")
    expect(page.locator(".field:has(#tr-distributed) .field-error")).to_contain_text("cannot be sharded with fsdp")
    page.fill("#tr-gpus", "64")
    page.click("#run-submit")
    expect(page.locator(".field:has(#tr-gpus) .field-error")).to_contain_text("16")
    assert len(api.get("/api/runs").json()) == runs_before  # nothing was queued
