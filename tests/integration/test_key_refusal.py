"""A worker whose PEFTLAB_SECRET_KEY differs from the server's (each host made its own random key, or a typo)
refuses every task message, so its runs stay queued. The server says why where the user looks: GET /api/workers
(refused_messages, warning), the Workers page and the queued run's page. A worker with the server's key then
trains the run (the reaper sends its message again).

The worker shares the server's data dir (the embedded broker lives there) but is given another key in its
environment; the server keeps the random key it made in that data dir."""
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for_status, wait_worker_ready
from tests.integration.private_stack import prepare_stack
from tests.integration.test_end_to_end import sentiment_csv

# The refusal is the worker's own check of the signature, and its report goes through the same table code on
# every database: the outcome does not depend on the backends, so CI runs it once, on SQLite.
pytestmark = [pytest.mark.integration, pytest.mark.backend_neutral]

HINT = "not signed with its PEFTLAB_SECRET_KEY — set the same PEFTLAB_SECRET_KEY on every server and worker"


@pytest.fixture
def split_key_stack(tmp_path, tiny_bert_source):
    # The reaper sends a waiting run's message again after 4 s (not 10 minutes), so the fixed worker gets one soon.
    stack = prepare_stack(tmp_path / "stack", [str(Path(tiny_bert_source).parent)], requeue_after_seconds=4,
                          reaper_interval_seconds=1, heartbeat_seconds=1, lease_seconds=20)
    try:
        stack.wrong = stack.spawn("worker-wrong-key", "worker", "--queues", "train", "--loglevel", "INFO",
                                  env={**stack.env, "PEFTLAB_SECRET_KEY": "a typo of the deployment's key"})
        stack.workers.append(stack.wrong)
        stack.start_server()
        wait_worker_ready(stack.wrong, timeout=300)  # torch imports slowly on a busy machine
        yield stack
    finally:
        print(stack.logs())
        stack.close()


def _refusing(client, name: str, at_least: int = 1, timeout: float = 60) -> dict:
    """The worker's row once it reports `at_least` refused messages."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        row = next((w for w in client.get("/api/workers").json() if w["name"] == name), None)
        if row and row["refused_messages"] >= at_least:
            return row
        time.sleep(0.5)
    pytest.fail(f"{name} reported no refusal; GET /api/workers: {client.get('/api/workers').json()}")


def test_a_worker_with_another_key_leaves_the_run_queued_and_the_server_says_why(split_key_stack, tiny_bert_source):
    stack = split_key_stack
    with stack.client() as c:
        model = c.post("/api/models", json={"name": "tiny bert keys", "source": tiny_bert_source})
        assert model.status_code == 201, model.text
        ds = c.post("/api/datasets", files={"file": ("reviews.csv", sentiment_csv(40))})
        assert ds.status_code == 201, ds.text
        run = c.post("/api/runs", json={
            "name": "waits for a worker with the key", "dataset_id": ds.json()["id"], "base_model": model.json()["id"],
            "task": "classification", "eval_fraction": 0.25, "columns": {"text": "review", "label": "sentiment"},
            "method": {"type": "lora", "r": 4}, "training": {"batch_size": 8, "max_steps": 3, "eval_every": 3}})
        assert run.status_code == 201, run.text
        run_id = run.json()["id"]

        name = f"{socket.gethostname()}:{stack.wrong.pid}"  # host:pid, as the worker names its row
        worker = _refusing(c, name)
        assert "refusing peftlab.train_run" in stack.wrong.log_path.read_text(errors="replace")
        assert worker["last_refused_at"] and worker["run_id"] is None  # nothing taken from the refused message
        assert worker["warning"].startswith(f"refused {worker['refused_messages']} task message")
        assert worker["warning"].endswith(HINT)
        _refusing(c, name, at_least=worker["refused_messages"] + 1)  # the reaper sent it again: refused again
        state = c.get(f"/api/runs/{run_id}").json()
        assert state["status"] == "queued" and state["attempts"] == 0 and state["started_at"] is None, state

        for page in (f"/runs/{run_id}", "/workers"):
            html = c.get(page)
            assert html.status_code == 200
            assert f"Worker <code>{name}</code> refused " in html.text and HINT in html.text, page

        # The fix: a worker with the server's key (the one in the shared data dir) takes the resent message.
        wait_worker_ready(stack.start_worker(), timeout=300)
        done = wait_for_status(lambda: c.get(f"/api/runs/{run_id}").json(), ("succeeded", "failed", "cancelled"))
        assert done["status"] == "succeeded", done
        assert HINT not in c.get(f"/runs/{run_id}").text  # no longer waiting
        assert HINT in c.get("/workers").text  # the worker with the typo still refuses what reaches it

