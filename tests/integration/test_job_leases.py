"""Server replicas share the periodic jobs through job leases (app/leases): racing replicas never both
hold one, the holder keeps it, an expired or released one passes to another; and two webhook notifiers
running at once (a lease that lapsed) never send one delivery twice.

On the session's database: SQLite by default, PostgreSQL with PEFTLAB_TEST_DATABASE_URL."""
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import delete, select, update

from app.db import Base, make_engine, utcnow
from app.leases import service as leases
from app.leases.models import JobLease

pytestmark = pytest.mark.integration


@pytest.fixture
def sessions(peftlab_env):
    """A new session on the session database per call: each replica (thread) has its own connection."""
    from app.db import get_sessionmaker

    opened = []

    def open_session():
        opened.append(get_sessionmaker()())
        return opened[-1]

    yield open_session
    for s in opened:
        s.close()


def _job() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"  # never one of the real jobs the session's servers run


def _race(sessions, fn_a, fn_b):
    """Run fn_a(session) and fn_b(session) at the same moment in two threads; their results."""
    start = threading.Barrier(2)
    session_a, session_b = sessions(), sessions()

    def go(fn, session):
        start.wait(timeout=30)
        return fn(session)

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(go, fn_a, session_a), pool.submit(go, fn_b, session_b)
        return a.result(timeout=60), b.result(timeout=60)


def test_two_replicas_racing_for_a_free_or_expired_lease_never_both_get_it(sessions):
    name = _job()
    admin = sessions()
    winners = []
    for i in range(16):
        if i % 2:  # an expired lease of a replica that died: both race on the UPDATE
            admin.execute(update(JobLease).where(JobLease.name == name)
                          .values(holder="dead", expires_at=utcnow() - timedelta(seconds=1)))
        else:  # no row yet: both race on the INSERT
            admin.execute(delete(JobLease).where(JobLease.name == name))
        admin.commit()
        a, b = _race(sessions, lambda s: leases.take(s, name=name, holder="A", seconds=60),
                     lambda s: leases.take(s, name=name, holder="B", seconds=60))
        assert (a is None) != (b is None), f"round {i}: A got {a}, B got {b}"
        holder = admin.scalar(select(JobLease.holder).where(JobLease.name == name))
        admin.commit()
        assert holder == ("A" if a else "B")
        winners.append(holder)
    print("winners:", winners)


def test_exactly_one_replica_runs_the_job_each_period_and_keeps_it(sessions):
    name = _job()
    ran: list[tuple[int, str]] = []
    replicas = {r: leases.Lease(name, seconds=30, holder=r) for r in ("A", "B")}
    for period in range(12):
        def round_on(replica):
            def run(session):
                if replicas[replica].held(session):
                    ran.append((period, replica))
            return run
        _race(sessions, round_on("A"), round_on("B"))
        assert [r for p, r in ran if p == period] in (["A"], ["B"]), ran
    assert len({r for _, r in ran}) == 1, f"the lease moved while its holder lived: {ran}"


def test_an_expired_lease_hands_the_job_over_and_a_released_one_at_once(sessions):
    name = _job()
    a, b = leases.Lease(name, seconds=1.5, holder="A"), leases.Lease(name, seconds=1.5, holder="B")
    session = sessions()
    assert a.held(session) and not b.held(session)
    a_until = a.until  # A's lease runs out then
    # A stops renewing (it died): B takes over once the lease ran out, not before.
    deadline = time.time() + 20
    while not b.held(session):
        assert time.time() < deadline, "B never took the expired lease"
        time.sleep(0.05)
    assert utcnow() > a_until  # not before A's lease ran out
    assert leases.holders(session)[name][0] == "B"
    assert not a.held(session)  # A, back, finds its lease gone
    # B shuts down cleanly: A takes the job at its next round, without waiting for an expiry.
    b.release(session)
    assert a.held(session)
    assert leases.holders(session)[name][0] == "A"


def test_a_round_that_meets_a_database_outage_logs_one_line_and_the_loop_goes_on(peftlab_env, caplog):
    import asyncio
    import logging

    from sqlalchemy.exc import OperationalError

    from app import main

    rounds = []

    def round_once():
        rounds.append(1)
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    class Held:  # this replica holds the job
        name = "test-outage"

        def held(self, session):
            return True

    async def two_rounds():
        task = asyncio.create_task(main._every(0.01, round_once, Held()))
        while len(rounds) < 2:
            await asyncio.sleep(0.01)
        task.cancel()

    with caplog.at_level(logging.WARNING, logger="peftlab"):
        asyncio.run(asyncio.wait_for(two_rounds(), 30))
    mine = [r for r in caplog.records if "test-outage" in r.getMessage()]
    assert mine and all("round skipped: " in r.getMessage() and r.exc_info is None for r in mine), mine


# ---- webhooks: no double sends between replicas -----------------------------------------------------------

@pytest.fixture
def private_db(peftlab_env, tmp_path):
    """A database of its own (the session's servers run notifiers on the shared one), its tables made."""
    import app.tables  # noqa: F401 — every table into Base.metadata
    from tests.integration.private_stack import _database

    url, drop = _database(tmp_path)
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()
    if drop:
        drop()


class _Receiver:
    """A chat tool's webhook endpoint on localhost that records every POST (tests/integration/test_webhooks.py
    has a fuller one; importing that module loads torch)."""

    def __init__(self):
        self.posts: list[tuple[str, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.posts.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posts_to(self, path: str) -> list[dict]:
        return [body for p, body in self.posts if p == path]


def _ended_runs(engine, receiver_url: str, count: int) -> None:
    from sqlalchemy.orm import Session

    from app.auth.models import Project
    from app.datasets.models import Dataset
    from app.notifications.models import Webhook
    from app.runs.models import Run

    with Session(engine) as s:
        project = Project(name="replicas")
        s.add(project)
        s.flush()
        s.add(Webhook(project_id=project.id, url=f"{receiver_url}/chat", events=["run.succeeded"],
                      created_at=utcnow() - timedelta(hours=1)))
        ds = Dataset(project_id=project.id, name="d", format="csv", num_rows=1, columns=[], preview=[], sha256="0" * 64,
                     size_bytes=1, storage_name=uuid.uuid4().hex)
        s.add(ds)
        s.flush()
        for i in range(count):
            s.add(Run(name=f"r{i}", status="succeeded", config={}, dataset_id=ds.id, project_id=project.id,
                      base_model="m", method="lora", task="classification", progress=1.0,
                      started_at=utcnow() - timedelta(minutes=1), finished_at=utcnow()))
        s.commit()


def test_two_notifiers_at_once_send_each_delivery_once(private_db, settings):
    from sqlalchemy.orm import Session

    from app.notifications import service as notifications

    receiver = _Receiver()
    try:
        _ended_runs(private_db, receiver.url, 12)
        with Session(private_db) as s:
            assert notifications.enqueue_endings(s) == 12
        a, b = _race(lambda: Session(private_db), lambda s: notifications.deliver_due(s, settings),
                     lambda s: notifications.deliver_due(s, settings))
        assert a + b == 12
        run_ids = [p["run"]["id"] for p in receiver.posts_to("/chat")]
        assert sorted(run_ids) == sorted(set(run_ids)) and len(run_ids) == 12, run_ids
    finally:
        receiver.server.shutdown()


def test_a_notifier_that_stalled_past_its_claim_does_not_send_again(private_db, settings, monkeypatch):
    """Replica A claims a delivery and stalls (a long pause) until its claim has run out; replica B claims it
    and sends it. A, awake, must not send it a second time."""
    from sqlalchemy.orm import Session

    from app.notifications import service as notifications
    from app.notifications.models import WebhookDelivery

    monkeypatch.setattr(notifications, "send_seconds", lambda settings: 0.5)  # claims of 1 s
    stalled, wake = threading.Event(), threading.Event()
    real_message = notifications.message

    def message_then_stall(*args, **kwargs):  # between A's claim and its send
        if threading.current_thread().name == "replica-a":
            stalled.set()
            assert wake.wait(timeout=60)
        return real_message(*args, **kwargs)

    monkeypatch.setattr(notifications, "message", message_then_stall)
    receiver = _Receiver()
    try:
        _ended_runs(private_db, receiver.url, 1)
        with Session(private_db) as s:
            notifications.enqueue_endings(s)
        result = {}
        replica_a = threading.Thread(name="replica-a", target=lambda: result.update(
            a=notifications.deliver_due(Session(private_db), settings)))
        replica_a.start()
        assert stalled.wait(timeout=30)
        with Session(private_db) as s:  # until A's claim has run out
            deadline = time.time() + 20
            while s.scalar(select(WebhookDelivery.next_attempt_at)) > utcnow():
                assert time.time() < deadline
                s.rollback()
                time.sleep(0.05)
            assert notifications.deliver_due(s, settings) == 1  # replica B
        wake.set()
        replica_a.join(timeout=60)
        assert result["a"] == 0
        assert len(receiver.posts_to("/chat")) == 1
        with Session(private_db) as s:
            delivery = s.scalar(select(WebhookDelivery))
            assert delivery.state == "delivered" and delivery.attempts == 1
    finally:
        receiver.server.shutdown()
