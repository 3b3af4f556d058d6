"""The New run form's peak-memory estimate (POST /api/models/{id}/estimate's memory_bytes), live as
the training settings change, and which workers could take the run, in headless Chromium."""
import uuid
from datetime import datetime, timezone

import pytest

from app.db import session_scope
from app.worker_status.models import Worker
from tests.e2e.test_run_form import open_form
from tests.e2e.test_ui_pages import upload_via_api

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

GIB = 2**30


@pytest.fixture(scope="module")
def dataset(api):
    return upload_via_api(api, f"reviews-memory-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def fake_workers(live_stack):
    """Two worker rows beside the stack's real worker: a large GPU and one too small for anything."""
    names = {f"e2e-big-{uuid.uuid4().hex[:6]}": 80 * GIB, f"e2e-tiny-{uuid.uuid4().hex[:6]}": GIB}
    with session_scope() as s:
        for name, memory in names.items():
            s.add(Worker(name=name, device={"kind": "cuda", "name": "Test GPU"}, memory_bytes=memory,
                         last_seen=datetime.now(timezone.utc)))
        s.commit()
    yield list(names)
    with session_scope() as s:
        s.query(Worker).filter(Worker.name.in_(list(names))).delete()
        s.commit()


def expected_memory(api, model_id, **training) -> int:
    body = {"task": "classification", "num_labels": 2, "method": {"type": "lora"},
            "training": {"batch_size": 32, "max_length": 128, "precision": "auto", "gradient_checkpointing": False,
                         "packing": False, **training}}
    res = api.post(f"/api/models/{model_id}/estimate", json=body)
    assert res.status_code == 200, res.text
    return res.json()["memory_bytes"]


def test_the_form_shows_the_memory_estimate_and_the_workers_that_can_take_it(page, api, dataset, model_id,
                                                                             fake_workers):
    big, tiny = fake_workers
    open_form(page, dataset, model_id)
    total = page.locator("#memory-total")
    expect(total).to_have_attribute("data-memory-bytes", str(expected_memory(api, model_id)))
    expect(total).to_contain_text("Peak memory: ≈")
    expect(page.locator("#memory-parts")).to_contain_text("activations")
    expect(page.locator(f'#memory-workers li[data-worker="{big}"]')).to_have_attribute("data-fits", "true")
    expect(page.locator(f'#memory-workers li[data-worker="{tiny}"]')).to_have_attribute("data-fits", "false")
    expect(page.locator(f'#memory-workers li[data-worker="{tiny}"]')).to_contain_text("too small")

    # Live: a larger batch needs more, gradient checkpointing less.
    page.fill("#tr-batch_size", "64")
    expect(total).to_have_attribute("data-memory-bytes", str(expected_memory(api, model_id, batch_size=64)))
    page.check("#tr-gradient_checkpointing")
    checkpointed = expected_memory(api, model_id, batch_size=64, gradient_checkpointing=True)
    expect(total).to_have_attribute("data-memory-bytes", str(checkpointed))
    assert checkpointed < expected_memory(api, model_id, batch_size=64)
    page.select_option("#tr-precision", "fp32")
    expect(total).to_have_attribute("data-memory-bytes", str(expected_memory(
        api, model_id, batch_size=64, gradient_checkpointing=True, precision="fp32")))
    expect(total).to_contain_text("fp32")
