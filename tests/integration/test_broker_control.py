"""Whoever can write to the broker cannot steer the workers with Celery's remote control: a
broadcast `cancel_consumer` for the training queue gets no answer, and queued runs still train.

Runs on the embedded transport by default and on Redis with PEFTLAB_TEST_BROKER_URL (skipped with
a reason when that Redis is not reachable, see tests/conftest.py)."""
import time

import pytest

from tests.conftest import wait_for_status
from tests.integration.test_end_to_end import _launch, sentiment_csv, tiny_model_id  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration
ENDED = ("succeeded", "failed", "cancelled")


def test_a_broadcast_cancel_consumer_does_not_stop_training(client, worker_process, tiny_model_id, settings):  # noqa: F811
    from celery import Celery

    from app.queue import get_celery

    # A stranger's Celery client: the broker's address (and, embedded, its folders), not the secret key.
    stranger = Celery("stranger", broker=settings.resolved_broker_url)
    stranger.conf.broker_transport_options = dict(get_celery().conf.broker_transport_options)
    time.sleep(1)  # worker_process is up; a broadcast reaches only workers whose control consumer listens too
    answers = stranger.control.cancel_consumer(settings.train_queue, reply=True, timeout=3)
    answers += stranger.control.add_consumer("stranger.queue", reply=True, timeout=2)
    assert answers == [], f"a worker obeyed remote control: {answers}"
    time.sleep(1)

    ds = client.post("/api/datasets", files={"file": ("control.csv", sentiment_csv(40, seed=5))}).json()
    run = _launch(client, ds["id"], tiny_model_id, max_steps=2, eval_every=2)
    done = wait_for_status(lambda: client.get(f"/api/runs/{run['id']}").json(), ENDED, timeout=180)
    assert done["status"] == "succeeded", done["error"]
