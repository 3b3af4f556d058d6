"""Workers act only on messages signed with the deployment's secret key."""
import time

import pytest

from app.db import session_scope
from app.queue import TRAIN_TASK, get_celery, send_train
from app.runs import lifecycle
from app.runs.models import Run
from app.runs.schemas import RunCreate
from tests.conftest import wait_for_status
from tests.integration.test_end_to_end import sentiment_csv, tiny_model_id  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def test_an_unsigned_or_forged_message_is_refused(client, worker_process, tiny_model_id, settings):  # noqa: F811
    ds = client.post("/api/datasets", files={"file": ("signed.csv", sentiment_csv(32, seed=9))}).json()
    config = RunCreate.model_validate({
        "dataset_id": ds["id"], "base_model": tiny_model_id, "eval_fraction": 0.25,
        "columns": {"text": "review", "label": "sentiment"}, "method": {"type": "lora"},
        "training": {"max_steps": 2, "batch_size": 8, "eval_every": 2}})
    # A queued run the server never sent (enqueued now, so its reaper leaves it alone meanwhile).
    with session_scope() as s:
        run = Run(name="signed only", config=config.model_dump(mode="json"), summary={}, dataset_id=ds["id"],
                  base_model=tiny_model_id, method="lora", task="classification", project_id=ds.get("project_id"))
        s.add(run)
        s.flush()
        run_id = run.id
    with session_scope() as s:
        lifecycle.mark_enqueued(s, run_id)
    celery = get_celery()
    celery.send_task(TRAIN_TASK, args=[run_id], queue=settings.train_queue)  # no signature
    celery.send_task(TRAIN_TASK, args=[run_id], queue=settings.train_queue, headers={"peftlab_signature": "0" * 64})
    time.sleep(6)
    assert client.get(f"/api/runs/{run_id}").json()["status"] == "queued"
    send_train(run_id)  # the server's signed message: now it runs
    done = wait_for_status(lambda: client.get(f"/api/runs/{run_id}").json(), ("succeeded", "failed"))
    assert done["status"] == "succeeded", done["error"]
