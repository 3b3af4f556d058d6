"""Queue order with a real worker: moving a queued run changes which run starts next."""
import time

import pytest

from tests.conftest import wait_for_status
from tests.integration.test_end_to_end import _launch, sentiment_csv, tiny_model_id  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration
ENDED = ("succeeded", "failed", "cancelled")


def test_moving_a_queued_run_changes_which_starts_next(client, worker_process, tiny_model_id):  # noqa: F811
    ds = client.post("/api/datasets", files={"file": ("queue.csv", sentiment_csv(40, seed=21))}).json()

    def get(run: dict) -> dict:
        return client.get(f"/api/runs/{run['id']}").json()

    # A long run keeps the only worker busy while the other two wait in the queue.
    blocker = _launch(client, ds["id"], tiny_model_id, max_steps=1_000_000, eval_every=1_000_000)
    first = second = None
    try:
        wait_for_status(lambda: get(blocker), ("running",) + ENDED, timeout=120)
        first = _launch(client, ds["id"], tiny_model_id, max_steps=2, eval_every=2)
        second = _launch(client, ds["id"], tiny_model_id, max_steps=2, eval_every=2)
        assert get(blocker)["status"] == "running", "the blocker must hold the worker while the queue is reordered"

        moved = client.post(f"/api/runs/{second['id']}/move", json={"position": "top"})
        assert moved.status_code == 200 and moved.json()["queue_position"] == 1, moved.text
        client.post(f"/api/runs/{blocker['id']}/cancel")

        # The worker's next message is the first run's (sent earlier), but it starts the head of the queue.
        started = wait_for_status(lambda: get(second), ("running",) + ENDED, timeout=120)
        assert started["status"] in ("running", "succeeded"), started["error"]
        done = [wait_for_status(lambda r=r: get(r), ENDED, timeout=120) for r in (second, first)]
        assert [d["status"] for d in done] == ["succeeded", "succeeded"], [d["error"] for d in done]
        # One worker: the moved run started first, and finished before the other one started.
        assert done[0]["started_at"] < done[0]["finished_at"] <= done[1]["started_at"]
    finally:
        for run in (blocker, first, second):
            if run is not None:
                client.post(f"/api/runs/{run['id']}/cancel")
        for run in (blocker, first, second):
            if run is not None:
                wait_for_status(lambda r=run: get(r), ENDED, timeout=60)
        time.sleep(1.5)  # let the worker drain the leftover messages before the next test queues runs
