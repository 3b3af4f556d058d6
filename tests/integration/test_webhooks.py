"""Webhooks against a real HTTP receiver on localhost: a run that ends is announced by the server's notifier
(Slack-compatible JSON), a failing receiver is retried until it answers, and one that never does is given up."""
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from app.db import session_scope, utcnow
from app.runs.models import Run
from tests.conftest import wait_for_status
from tests.integration.test_end_to_end import sentiment_csv

pytestmark = pytest.mark.integration


class Receiver:
    """A chat tool's incoming-webhook endpoint: records every POST; /flaky-N fails the first N with 500,
    /down always fails."""

    def __init__(self):
        self.posts: list[tuple[str, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.posts.append((self.path, body))
                seen = sum(1 for path, _ in receiver.posts if path == self.path)
                failing = self.path == "/down" or (self.path.startswith("/flaky-")
                                                   and seen <= int(self.path.split("-")[1]))
                self.send_response(500 if failing else 200)
                self.end_headers()
                self.wfile.write(b"no" if failing else b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posts_to(self, path: str) -> list[dict]:
        return [body for p, body in self.posts if p == path]

    def wait_for(self, path: str, count: int, timeout: float = 60) -> list[dict]:
        deadline = time.time() + timeout
        while len(self.posts_to(path)) < count:
            if time.time() > deadline:
                raise AssertionError(f"{path} got {len(self.posts_to(path))} posts, wanted {count}: {self.posts}")
            time.sleep(0.2)
        return self.posts_to(path)


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def api(live_stack):
    with httpx.Client(base_url=live_stack.url, headers=live_stack.headers, timeout=60) as client:
        yield client


def _project(api, name: str) -> int:
    return api.post("/api/projects", json={"name": name}).json()["id"]


def _ended_run(project_id: int, dataset_id: int, status: str, finished_ago: float = 0.0) -> int:
    """A run that ended (written straight into the database: the notifier only reads runs)."""
    with session_scope() as s:
        run = Run(name=f"seeded {status}", status=status, config={}, dataset_id=dataset_id, project_id=project_id,
                  base_model="minilm-l6", method="lora", task="classification", progress=1.0,
                  error="out of GPU memory" if status == "failed" else None,
                  started_at=utcnow() - timedelta(seconds=finished_ago + 95),
                  finished_at=utcnow() - timedelta(seconds=finished_ago),
                  summary={"eval": {"accuracy": 0.875, "f1": None}} if status == "succeeded" else {})
        s.add(run)
        s.flush()
        return run.id


def _recorded(api, project: int, status: int, timeout: float = 10) -> dict:
    """The project's (one) webhook, once its last delivery's answer `status` is recorded."""
    deadline = time.time() + timeout
    while (hook := api.get(f"/api/projects/{project}/webhooks").json()[0])["last_status"] != status:
        assert time.time() < deadline, hook
        time.sleep(0.2)
    return hook


def test_a_real_run_that_ends_is_announced(api, receiver, worker_process, tiny_bert_source):
    project = _project(api, "hooked")
    hook = api.post(f"/api/projects/{project}/webhooks", json={"url": f"{receiver.url}/chat"})
    assert hook.status_code == 201, hook.text
    model = api.post("/api/models", json={"name": "tiny bert hooks", "source": tiny_bert_source}).json()
    ds = api.post("/api/datasets", files={"file": ("hooks.csv", sentiment_csv(40))},
                  data={"project_id": str(project)}).json()
    run = api.post("/api/runs", json={
        "name": "announced", "dataset_id": ds["id"], "base_model": model["id"], "task": "classification",
        "eval_fraction": 0.25, "columns": {"text": "review", "label": "sentiment"}, "method": {"type": "lora", "r": 4},
        "training": {"max_steps": 4, "batch_size": 8, "eval_every": 2}}).json()
    wait_for_status(lambda: api.get(f"/api/runs/{run['id']}").json(), ("succeeded", "failed"))
    (message,) = receiver.wait_for("/chat", 1)
    assert message["event"] == "run.succeeded" and message["run"]["id"] == run["id"]
    assert message["text"].startswith(f'Run {run["id"]} "announced" in hooked succeeded (lora on {model["id"]}')
    assert message["text"].endswith(f"/runs/{run['id']}") and message["project"] == {"id": project, "name": "hooked"}
    assert message["run"]["summary"]["eval"]["accuracy"] is not None
    listed = _recorded(api, project, 200)  # the server records the answer just after the receiver has it
    assert listed["last_delivered_at"] and listed["last_error"] is None
    time.sleep(1.5)
    assert len(receiver.posts_to("/chat")) == 1  # once, not once per notifier round


def test_a_failing_receiver_is_retried_until_it_answers(api, receiver):
    project = _project(api, "flaky receiver")
    ds = api.post("/api/datasets", files={"file": ("flaky.csv", b"text,label\na,b\nc,d\n")},
                  data={"project_id": str(project)}).json()
    old = _ended_run(project, ds["id"], "succeeded", finished_ago=3600)  # ended before the webhook existed
    api.post(f"/api/projects/{project}/webhooks", json={"url": f"{receiver.url}/flaky-2",
                                                        "events": ["run.failed", "run.succeeded"]})
    run_id = _ended_run(project, ds["id"], "failed")
    posts = receiver.wait_for("/flaky-2", 3)
    assert [p["run"]["id"] for p in posts] == [run_id] * 3  # two 500s, then delivered
    assert posts[0]["event"] == "run.failed" and "out of GPU memory" in posts[0]["text"]
    assert old not in {p["run"]["id"] for p in posts}
    _recorded(api, project, 200)
    time.sleep(1.5)
    assert len(receiver.posts_to("/flaky-2")) == 3


def test_a_receiver_that_never_answers_is_given_up_and_filtered_events_are_not_sent(api, receiver):
    project = _project(api, "down receiver")
    ds = api.post("/api/datasets", files={"file": ("down.csv", b"text,label\na,b\nc,d\n")},
                  data={"project_id": str(project)}).json()
    api.post(f"/api/projects/{project}/webhooks", json={"url": f"{receiver.url}/down", "events": ["run.succeeded"]})
    _ended_run(project, ds["id"], "cancelled")  # not asked for
    _ended_run(project, ds["id"], "succeeded")
    receiver.wait_for("/down", 3)  # PEFTLAB_WEBHOOK_MAX_ATTEMPTS=3 in tests
    time.sleep(2)
    posts = receiver.posts_to("/down")
    assert len(posts) == 3 and {p["event"] for p in posts} == {"run.succeeded"}
    hook = _recorded(api, project, 500)
    assert "HTTP 500" in hook["last_error"] and hook["last_delivered_at"] is None
