"""The metric rollups stay exact however points arrive (out of order, sent twice, dropped after a
checkpoint and written again), and charts read from them equal the same downsampling done directly
over the raw points. Dialect-dependent (upserts, PostgreSQL's SQL backfill): runs on SQLite and on
PostgreSQL."""
import random
from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update

from app.compare import service as compare_service
from app.db import get_engine, session_scope, utcnow
from app.metrics import downsample, rollups
from app.metrics.models import MetricPoint, MetricRollup
from app.metrics.service import delete_after, record_points
from app.runs import lifecycle
from app.runs.models import Run

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


@pytest.fixture
def new_run(client):
    """new_run() → the id of a succeeded run in the admin's project; deleted afterwards."""
    csv = "t,l\n" + "a,1\nb,2\n" * 5
    ds = client.post("/api/datasets", files={"file": ("rollups.csv", csv.encode())}).json()
    made = []

    def make(status: str = "succeeded") -> int:
        with session_scope() as s:
            run = Run(name=f"rollups {len(made)}", config={"training": {"seed": len(made)}}, summary={},
                      dataset_id=ds["id"], base_model="minilm-l6", method="lora", task="classification",
                      status=status, started_at=utcnow() - timedelta(hours=1))
            s.add(run)
            s.flush()
            made.append(run.id)
            return run.id

    yield make
    for run_id in made:
        client.delete(f"/api/runs/{run_id}")


def record(run_id: int, points: list) -> None:
    with session_scope() as s:
        for i in range(0, len(points), 5000):  # PostgreSQL takes at most 65,535 parameters a statement
            record_points(s, run_id, points[i:i + 5000])


def raw(run_id: int, name: str) -> list[tuple[int, float, float]]:
    with session_scope() as s:
        return downsample.all_points(s, run_id, name)


def reference(points: list[tuple[int, float, float]], max_points: int) -> list[tuple[int, float, float]]:
    """The downsampling's definition (app/metrics/downsample.py), computed over the raw points."""
    buckets = downsample.bucket_count(max_points)
    if len(points) <= 2 * buckets + 2:
        return points
    level = downsample.level_for(points[0][0], points[-1][0], buckets)
    lows, highs = {}, {}
    for p in points:  # in step order: a strict comparison keeps the earliest step of a tie
        b = p[0] >> level
        if b not in lows or p[1] < lows[b][1]:
            lows[b] = p
        if b not in highs or p[1] > highs[b][1]:
            highs[b] = p
    keep = {p[0]: p for p in [points[0], points[-1], *lows.values(), *highs.values()]}
    return [keep[s] for s in sorted(keep)][:max_points]


def stored_rollups(run_id: int) -> list[tuple]:
    c = MetricRollup.__table__.c
    cols = [c.name, c.level, c.bucket, *(c[name] for name in rollups._COLUMNS)]
    with session_scope() as s:
        return sorted(tuple(r) for r in s.execute(select(*cols).where(MetricRollup.run_id == run_id)))


def rebuilt_rollups(run_id: int) -> list[tuple]:
    """The rollups computed from scratch over the run's points now stored."""
    with session_scope() as s:
        points = s.execute(select(MetricPoint.name, MetricPoint.step, MetricPoint.value, MetricPoint.time)
                           .where(MetricPoint.run_id == run_id).order_by(MetricPoint.name, MetricPoint.step)).all()
    return sorted((name, level, bucket, *block) for level, blocks in rollups.fold(points).items()
                  for (name, bucket), block in blocks.items())


def noisy_series(name: str, steps: list[int], rng: random.Random, *, shift: float = 0.0) -> list:
    """Coarse values (many ties, as eval accuracies have) and a spike or two."""
    points = [(name, s, round(rng.uniform(0, 1), 1) + shift, T0 + s * 0.5) for s in steps]
    for i in rng.sample(range(len(points)), 2):
        points[i] = (name, points[i][1], 40.0 + shift, points[i][3])
    return points


def assert_charts_match_raw(run_id: int, names: list[str]) -> None:
    for name in names:
        points = raw(run_id, name)
        for max_points in (10, 57, 500, 1000, 5000):
            with session_scope() as s:
                got = downsample.run_series(s, run_id, [name], max_points).get(name, [])
            assert got == reference(points, max_points), (name, max_points)


def test_points_in_any_order_and_sent_twice_keep_the_rollups_exact(new_run):
    rng = random.Random(1)
    run = new_run()
    steps = list(range(0, 30_000, 3)) + list(range(30_000, 31_000))  # a change of logging rate
    points = noisy_series("train/loss", steps, rng) + noisy_series("eval/accuracy", list(range(0, 31_000, 250)), rng)
    rng.shuffle(points)
    for i in range(0, len(points), 1777):  # batches in random order, like redelivered flushes
        record(run, points[i:i + 1777])
    resent = [(n, s, v + 100.0, t) for n, s, v, t in rng.sample(points, 500)]  # duplicates are ignored
    record(run, resent)
    assert stored_rollups(run) == rebuilt_rollups(run)
    assert [p[1] for p in raw(run, "train/loss")] == [p[2] for p in sorted(p for p in points if p[0] == "train/loss")]
    assert_charts_match_raw(run, ["train/loss", "eval/accuracy"])


def test_the_compare_api_answers_what_the_raw_points_give(client, new_run):
    rng = random.Random(2)
    a, b = new_run(), new_run()
    record(a, noisy_series("train/loss", list(range(20_000)), rng) + noisy_series("eval/loss", list(range(0, 20_000, 7)), rng))
    record(b, noisy_series("train/loss", list(range(5, 9_000, 2)), rng))
    for x in ("step", "time"):
        body = client.get(f"/api/compare?runs={a},{b}&names=train/loss,eval/loss&max_points=300&x={x}").json()
        for run in (a, b):
            with session_scope() as s:
                start = min(t for t in (compare_service.series_db.first_time(s, run),
                                        s.get(Run, run).started_at.timestamp()) if t)
            for name in ("train/loss", "eval/loss"):
                expected = [[s if x == "step" else round(t - start, 2), compare_service._rounded(v)]
                            for s, v, t in reference(raw(run, name), 300)]
                assert body["series"][str(run)].get(name, []) == expected, (run, name, x)
    assert 100 < len(body["series"][str(a)]["train/loss"]) <= 300  # downsampled, not empty


def test_a_resumed_attempt_rewriting_its_points_keeps_the_rollups_exact(new_run):
    rng = random.Random(3)
    run = new_run()
    record(run, noisy_series("train/loss", list(range(1, 20_001)), rng)
           + noisy_series("eval/loss", list(range(100, 20_001, 100)), rng))
    # Checkpoints: mid-bucket at every level, at the end of a 2^14 bucket, and at step 0 (from scratch).
    for checkpoint in (13_333, 16_383, 10_000, 0):
        with session_scope() as s:
            delete_after(s, run, checkpoint)
            s.commit()
        assert stored_rollups(run) == rebuilt_rollups(run), checkpoint
        assert max((p[0] for p in raw(run, "train/loss")), default=0) <= checkpoint
        # The attempt writes the steps after the checkpoint again, with other values.
        record(run, noisy_series("train/loss", list(range(checkpoint + 1, 20_001)), rng, shift=0.5)
               + noisy_series("eval/loss", list(range(checkpoint - checkpoint % 100 + 100, 20_001, 100)), rng, shift=0.5))
        assert stored_rollups(run) == rebuilt_rollups(run), checkpoint
        assert_charts_match_raw(run, ["train/loss", "eval/loss"])


def test_start_attempt_mends_the_rollups_of_the_points_it_drops(new_run):
    run = new_run(status="queued")
    with session_scope() as s:
        assert lifecycle.claim(s, run, "w1", 30)
    record(run, [("train/loss", step, 1.0 / step, T0 + step) for step in range(1, 3001)])
    with session_scope() as s:
        s.execute(update(Run).where(Run.id == run).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
        assert lifecycle.recover_expired(s, max_attempts=3) == [run]
        lease = lifecycle.take(s, run, "w2", 30)
        assert lifecycle.start_attempt(s, lease, from_step=1234)
    assert stored_rollups(run) == rebuilt_rollups(run)
    with session_scope() as s:
        assert rollups.totals(s, run, None)["train/loss"][:3] == [1234, 1.0 / 1234, 1234]
        lifecycle.finish(s, run, lease.worker, "cancelled", attempt=lease.attempt)


def test_backfill_builds_what_the_writes_maintain(new_run):
    rng = random.Random(4)
    run, other = new_run(), new_run()
    record(run, noisy_series("train/loss", list(range(0, 12_000, 5)), rng) + noisy_series("eval/f1", [3, 9, 700], rng))
    record(other, noisy_series("train/loss", list(range(100)), rng))
    maintained, untouched = stored_rollups(run), stored_rollups(other)
    with get_engine().begin() as conn:
        conn.execute(delete(MetricRollup).where(MetricRollup.run_id == run))
        rollups.backfill(conn, [run])
    assert stored_rollups(run) == maintained and stored_rollups(other) == untouched


def test_deleting_a_run_deletes_its_rollups(client, new_run):
    run = new_run()
    record(run, [("train/loss", s, 1.0, T0) for s in range(100)])
    assert stored_rollups(run)
    assert client.delete(f"/api/runs/{run}").status_code == 204
    assert stored_rollups(run) == []


def test_the_run_page_series_are_downsampled_from_the_rollups(client, new_run):
    run = new_run()
    points = [("train/loss", s, 1.0, T0 + s) for s in range(50_000)]
    points[31_415] = ("train/loss", 31_415, 9.0, T0 + 31_415)
    record(run, points + [("eval/accuracy", s, 0.5, T0 + s) for s in range(0, 50_000, 1000)])
    res = client.get(f"/api/runs/{run}/metrics", params={"max_points": 200})
    assert res.status_code == 200, res.text
    series = res.json()["series"]
    assert list(series) == ["eval/accuracy", "train/loss"]
    assert series["eval/accuracy"] == [[s, 0.5] for s in range(0, 50_000, 1000)]  # short: whole
    loss = series["train/loss"]
    assert len(loss) <= 200 and [31_415, 9.0] in loss and loss[0][0] == 0 and loss[-1][0] == 49_999
    assert loss == [[s, v] for s, v, _ in reference(raw(run, "train/loss"), 200)]


def test_best_evaluations_come_from_the_rollups(client, new_run):
    a, b = new_run(), new_run()
    record(a, [("eval/accuracy", s, 0.5 + (s % 17) / 100, T0 + s) for s in range(0, 5000, 10)])
    record(b, [("eval/accuracy", s, 0.7 - (s % 13) / 100, T0 + s) for s in range(0, 5000, 10)])
    groups = client.get(f"/api/compare?runs={a},{b}").json()["groups"]
    best = groups[0]["best_metrics"]["eval/accuracy"]
    assert (best["n"], best["min"], best["max"]) == (2, pytest.approx(0.66), pytest.approx(0.7))


def test_series_read_together_match_each_read_alone(new_run):
    """Series thinned at the same bucket level come from one statement: several series with ranges that
    overlap, nest and lie apart, some whole, some at a merged-pairs level, each equal to its own reference."""
    rng = random.Random(5)
    run = new_run()
    shapes = {"train/loss": range(0, 40_000, 2), "train/grad_norm": range(0, 40_000, 7),  # same range, same level
              "eval/loss": range(20_000, 60_000, 3),  # overlapping the first two
              "eval/f1": range(10_000, 12_000, 1),  # nested inside them, a finer level
              "eval/accuracy": range(900_000, 940_000, 5),  # far off, at the first two's level
              "eval/perplexity": range(0, 400, 100)}  # short: whole
    record(run, [p for name, steps in shapes.items() for p in noisy_series(name, list(steps), rng)])
    names = list(shapes)
    for max_points in (10, 57, 300, 1000):
        with session_scope() as s:
            together = downsample.run_series(s, run, names, max_points)
        assert list(together) == names
        for name in names:
            assert together[name] == reference(raw(run, name), max_points), (name, max_points)


def test_a_comparison_reads_each_run_in_a_few_statements(client, new_run):
    """Per run: its cursor, its top-level rollups (shared by the curves and the groups' best values) and one
    read of the buckets of all its thinned series: three statements, however many series it has."""
    from sqlalchemy import event

    rng = random.Random(6)
    runs = [new_run() for _ in range(5)]
    for run in runs:
        record(run, [p for name in ("train/loss", "eval/loss", "eval/accuracy")
                     for p in noisy_series(name, list(range(0, 3000, 1)), rng)])
    statements = []

    def count(_conn, _cursor, statement, *_):
        # The metric reads only: the app's periodic jobs (reaper, webhooks, search) share the engine.
        if "metric" in statement:
            statements.append(statement)

    def compare(ids: list[int]) -> int:
        statements.clear()
        event.listen(get_engine(), "before_cursor_execute", count)
        try:
            res = client.get(f"/api/compare?runs={','.join(map(str, ids))}&max_points=200")
        finally:
            event.remove(get_engine(), "before_cursor_execute", count)
        assert res.status_code == 200 and len(res.json()["series"][str(ids[-1])]["eval/loss"]) > 50
        return len(statements)

    # Each request is the first for its runs (no cached curves); two runs' difference is the per-run cost.
    assert compare(runs[2:]) - compare(runs[:2]) == 3  # three runs against two
