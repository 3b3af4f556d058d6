"""In headless Chromium: the warning about a worker that refuses the server's task messages (another
PEFTLAB_SECRET_KEY) on the Workers page and on a queued run's page, as the pages' scripts keep it current.
The refusing worker is a row as a worker writes it (tests/integration/test_key_refusal.py has a real one)."""
import uuid
from datetime import datetime, timezone

import pytest

from app.db import session_scope
from app.worker_status.models import Worker
from tests.api.test_workers_api import unsent_queued_run
from tests.e2e.test_ui_pages import upload_via_api

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

HINT = "not signed with its PEFTLAB_SECRET_KEY — set the same PEFTLAB_SECRET_KEY on every server and worker"


@pytest.fixture
def queued_run(api):
    """A queued run nobody takes: marked sent (the reaper leaves it for requeue_after_seconds) with no message
    in the broker (the session's worker never hears of it)."""
    run_id = unsent_queued_run(upload_via_api(api, f"reviews-keys-{uuid.uuid4().hex[:6]}")["id"])
    yield run_id
    api.post(f"/api/runs/{run_id}/cancel")


@pytest.fixture
def refusing_worker():
    """Adds, when called, a live worker row that refused 3 messages just now; removed afterwards."""
    name = f"e2e-keys-{uuid.uuid4().hex[:6]}:1"

    def add() -> str:
        now = datetime.now(timezone.utc)
        with session_scope() as s:
            s.add(Worker(name=name, device={"kind": "cpu", "name": "Test CPU"}, memory_bytes=2**30, last_seen=now,
                         refused_messages=3, last_refused_at=now))
            s.commit()
        return name

    yield add
    with session_scope() as s:
        s.query(Worker).filter(Worker.name == name).delete()
        s.commit()


def test_the_workers_page_names_the_refusing_worker(page, refusing_worker):
    name = refusing_worker()
    page.goto("/workers")
    expect(page.locator(f'#workers-body tr[data-worker="{name}"] .worker-refusals')).to_contain_text(
        "refuses messages (3)")
    alert = page.locator("#key-refusals")  # redrawn by the script from GET /api/workers: still there
    expect(alert).to_be_visible()
    expect(alert).to_contain_text(f"Worker {name} refused 3 task messages that were {HINT}.")
    expect(alert.locator("li")).to_have_count(1)  # the stack's real worker refuses nothing


def test_a_queued_run_page_learns_why_it_waits_and_drops_it_when_the_run_leaves_the_queue(page, api, queued_run,
                                                                                         refusing_worker):
    page.goto(f"/runs/{queued_run}")
    expect(page.locator("#run-status")).to_contain_text("queued")
    alert = page.locator("#key-refusals")
    expect(alert).to_be_hidden()
    name = refusing_worker()  # after the page loaded: its check while the run waits (every 15 s) finds it
    expect(alert).to_be_visible(timeout=25_000)
    expect(alert).to_contain_text(f"Worker {name} refused 3 task messages that were {HINT}.")
    page.reload()  # rendered with the page too
    expect(alert).to_be_visible()
    assert api.post(f"/api/runs/{queued_run}/cancel").status_code == 200
    expect(page.locator("#run-status")).to_contain_text("cancelled")
    expect(alert).to_be_hidden()
