"""Browser tests of the run page's additions (system charts, smoothing and log scale, worker log tail,
confusion matrix, GPU chart) and of the runs table's search, queue places and chosen columns."""
import re
import uuid

import httpx
import pytest

from app.db import session_scope, utcnow
from app.runs.models import Run
from tests.conftest import wait_for_status
from tests.e2e.test_ui_pages import upload_via_api

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def trained(api, model_id):
    """A LoRA run trained by the real worker: 8 steps, evaluated at steps 4 and 8 on 15 held-out rows."""
    dataset = upload_via_api(api, f"runpage-{uuid.uuid4().hex[:6]}")
    token = uuid.uuid4().hex[:8]
    body = {"name": f"runpage {token}", "dataset_id": dataset["id"], "base_model": model_id, "eval_fraction": 0.25,
            "columns": {"text": "text", "label": "label"}, "method": {"type": "lora", "r": 8},
            "training": {"learning_rate": 0.01, "max_steps": 8, "batch_size": 8, "eval_every": 4, "max_length": 32}}
    run = api.post("/api/runs", json=body).json()
    done = wait_for_status(lambda: api.get(f"/api/runs/{run['id']}").json(), ("succeeded", "failed"))
    assert done["status"] == "succeeded", done["error"]
    return {"run": done, "dataset": dataset, "token": token}


def _points(page, chart: str) -> int:
    return int(page.get_attribute(f"#chart-{chart}", "data-points") or 0)


def test_system_charts_with_smoothing_and_log_scale(page, trained):
    run_id = trained["run"]["id"]
    page.goto(f"/runs/{run_id}")
    for chart in ("loss", "grad", "throughput", "memory"):
        page.wait_for_function(f"() => Number(document.querySelector('#chart-{chart}').dataset.points) > 0")
        expect(page.locator(f"#chart-{chart} canvas").first).to_be_visible()
    assert page.get_attribute("#chart-throughput", "data-series-count") == "2"  # tokens/s and samples/s
    expect(page.locator("#gpu-card")).to_be_hidden()  # a CPU worker reports no NVML points

    raw_points = _points(page, "loss")
    assert page.get_attribute("#chart-loss", "data-lines") == page.get_attribute("#chart-loss", "data-series-count")
    page.locator("#chart-loss-smoothing").fill("0.8")
    expect(page.locator("#chart-loss")).to_have_attribute("data-smoothing", "0.8")
    series = int(page.get_attribute("#chart-loss", "data-series-count"))
    expect(page.locator("#chart-loss")).to_have_attribute("data-lines", str(2 * series))  # raw, faint + smoothed
    assert _points(page, "loss") == raw_points
    expect(page.locator("#chart-loss .u-legend")).to_contain_text("train loss (raw)")
    page.check("#chart-grad-log")
    expect(page.locator("#chart-grad")).to_have_attribute("data-log", "true")
    expect(page.locator("#chart-grad canvas").first).to_be_visible()
    assert _points(page, "grad") > 0

    page.reload()  # the view of each chart is remembered
    expect(page.locator("#chart-loss-smoothing")).to_have_value("0.8")
    expect(page.locator("#chart-grad-log")).to_be_checked()
    expect(page.locator("#chart-lr-log")).not_to_be_checked()
    expect(page.locator("#chart-grad")).to_have_attribute("data-log", "true")


def test_smoothing_works_on_a_copy(page, trained):
    page.goto(f"/runs/{trained['run']['id']}")
    result = page.evaluate("""async () => {
        const { ema } = await import('/static/js/chart_controls.js');
        const raw = [1, null, 3, 5];
        return { raw, smooth: ema(raw, 0.5), none: ema(raw, 0) };
    }""")
    assert result["raw"] == [1, None, 3, 5]
    assert result["none"] == [1, None, 3, 5]
    smooth = result["smooth"]
    assert smooth[0] == 1 and smooth[1] is None  # debiased: the first point is itself; gaps stay gaps
    assert smooth[2] == pytest.approx(1.75 / 0.75) and smooth[3] == pytest.approx(3.375 / 0.875)


def test_worker_log_tail(page, api, trained):
    run_id = trained["run"]["id"]
    lines = api.get(f"/api/runs/{run_id}/logs").json()["lines"]
    messages = [l["message"] for l in lines]
    assert any("training 8 steps" in m for m in messages), messages
    assert sum("eval loss" in m and "accuracy" in m for m in messages) == 2, messages  # steps 4 and 8

    page.goto(f"/runs/{run_id}")
    expect(page.locator("#log-tail .log-line")).to_have_count(len(lines))
    expect(page.locator("#log-tail")).to_contain_text("training 8 steps")
    expect(page.locator("#log-tail")).to_contain_text("step 8/8: eval loss")
    expect(page.locator("#log-empty")).to_be_hidden()


def test_the_log_tail_of_a_live_run_streams_its_lines(page, admin_account):
    """Lines written while the page is open appear without a reload, the ones written just after the run's
    end too, and the page never polls GET …/logs: it reads the log stream."""
    from tests.integration.test_live_streams import _live_run
    from tests.integration.test_log_stream import _finish, _write_lines

    run_id = _live_run(admin_account.user_id)
    _write_lines(run_id, range(1, 3))
    polls = []
    page.on("request", lambda req: polls.append(req.url) if re.search(r"/logs(\?|$)", req.url) else None)
    page.goto(f"/runs/{run_id}")
    expect(page.locator("#log-tail .log-line")).to_have_count(2)
    _write_lines(run_id, range(3, 5))
    expect(page.locator("#log-tail .log-line")).to_have_count(4)
    _finish(run_id)
    _write_lines(run_id, [5])  # the worker's last flush, after the final status
    expect(page.locator("#log-tail")).to_have_attribute("data-ended", "1")
    expect(page.locator("#log-tail .log-line")).to_have_count(5)
    expect(page.locator("#log-tail .log-line").last).to_contain_text("line 5")
    assert polls == [], polls


def _set_hidden(page, hidden: bool) -> None:
    """What the browser does when the tab is put in the background (or shown again)."""
    page.evaluate("""(hidden) => {
        Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
        Object.defineProperty(document, "visibilityState", {value: hidden ? "hidden" : "visible", configurable: true});
        document.dispatchEvent(new Event("visibilitychange"));
    }""", hidden)


def test_a_hidden_tab_lets_go_of_its_stream_and_resumes_when_shown(page, admin_account):
    """Six connections per server for all of a browser's tabs (HTTP/1.1): a live run's page holds one stream
    (points, status and log lines), closes it in a background tab, and when shown opens it again after the
    last event it had (nothing twice, nothing missed)."""
    from tests.integration.test_live_streams import _live_run, _write_points
    from tests.integration.test_log_stream import _finish, _write_lines

    run_id = _live_run(admin_account.user_id)
    _write_lines(run_id, range(1, 3))
    _write_points(run_id, range(1, 4))
    opened = {"logs": [], "events": []}
    page.on("request", lambda req: opened["logs" if "/logs/events" in req.url else "events"].append(req.url)
            if req.url.split("?")[0].endswith("/events") else None)
    try:
        page.goto(f"/runs/{run_id}")
        expect(page.locator("#log-tail .log-line")).to_have_count(2)
        expect(page.locator("#chart-loss")).to_have_attribute("data-points", "3")
        _set_hidden(page, True)
        _write_lines(run_id, range(3, 5))
        _write_points(run_id, range(4, 6))
        page.wait_for_timeout(1500)  # announced lines and points reach an open stream well within this
        expect(page.locator("#log-tail .log-line")).to_have_count(2)
        expect(page.locator("#chart-loss")).to_have_attribute("data-points", "3")
        _set_hidden(page, False)
        expect(page.locator("#log-tail .log-line")).to_have_count(4)
        expect(page.locator("#chart-loss")).to_have_attribute("data-points", "5")
        assert [line.split()[-1] for line in page.locator("#log-tail .log-message").all_inner_texts()] == ["1", "2", "3", "4"]
        # One stream per page: the log lines ride on the metric stream, which resumed after its last event.
        assert opened["logs"] == [] and len(opened["events"]) == 2, opened
        assert all("logs=true" in url for url in opened["events"]) and re.search(r"last_event_id=\d+\.2\b", opened["events"][1]), opened
    finally:
        _finish(run_id)


def test_confusion_matrix_of_the_eval_set(page, api, trained):
    run_id = trained["run"]["id"]
    data = api.get(f"/api/runs/{run_id}/confusion").json()
    assert data["labels"] == ["neg", "pos"] and data["total"] == 15

    page.goto(f"/runs/{run_id}")
    expect(page.locator("#confusion-card")).to_be_visible()
    expect(page.locator("#confusion-matrix tbody tr")).to_have_count(2)
    counts = [int(c) for c in page.locator("#confusion-matrix td[data-count]").evaluate_all(
        "cells => cells.map((c) => c.dataset.count)")]
    assert counts == [n for row in data["matrix"] for n in row] and sum(counts) == 15
    expect(page.locator("#class-scores tbody tr")).to_have_count(2)
    expect(page.locator("#class-scores tbody tr[data-label=neg] td").last).to_have_text(
        str(data["per_class"][0]["support"]))
    expect(page.locator("#confusion-summary")).to_contain_text("15 eval rows")


def test_gpu_chart_appears_when_the_worker_reports_nvml_points(page, api, trained):
    from app.runs import lifecycle
    from workers.training.gpu_metrics import MEMORY, UTILIZATION
    from workers.training.reporting import LeaseKeeper, SqlReporter

    run_id = _queued_run(trained, "gpu points")
    try:
        with session_scope() as s:
            lease = lifecycle.take(s, run_id, "gpu-host:1", 60)
        reporter = SqlReporter(lease, LeaseKeeper(lease, 60, 5))  # the worker's reporting path
        for step in range(1, 6):
            reporter.report(UTILIZATION, step, 40.0 + 10 * step)
            reporter.report(MEMORY, step, 2.0e9 + step * 1e8)
        reporter.close()
        with session_scope() as s:
            assert lifecycle.finish(s, run_id, lease.worker, "succeeded", summary={}, attempt=lease.attempt)
        page.goto(f"/runs/{run_id}")
        expect(page.locator("#gpu-card")).to_be_visible()
        expect(page.locator("#chart-gpu")).to_have_attribute("data-points", "10")
        expect(page.locator("#chart-gpu")).to_have_attribute("data-series-count", "2")
        expect(page.locator("#chart-gpu-smoothing")).to_be_visible()
    finally:
        api.delete(f"/api/runs/{run_id}")


def _queued_run(trained, name: str) -> int:
    """A queued run written to SQL only, never sent to the broker, so the worker leaves it queued. Marked as
    sent just now: the reaper re-sends a queued run never sent at once, one sent only after requeue_after_seconds."""
    template = trained["run"]
    with session_scope() as s:
        run = Run(name=name, status="queued", enqueued_at=utcnow(), config=template["config"], summary={},
                  dataset_id=template["dataset_id"],
                  base_model=template["base_model"], method="lora", task="classification",
                  project_id=s.get(Run, template["id"]).project_id)
        s.add(run)
        s.flush()
        return run.id


def test_runs_table_search_queue_places_and_chosen_columns(page, api, trained):
    token = trained["token"]
    waiting = [_queued_run(trained, f"runpage {token} waiting {i}") for i in range(2)]
    try:
        page.goto("/runs")
        page.fill("#filter-q", token.upper())  # any case
        expect(page.locator("#runs-body tr[data-run-id]")).to_have_count(3)
        expect(page).to_have_url(re.compile(f"q={token.upper()}"))
        places = [int(page.locator(f"tr[data-run-id='{i}'] [data-queue-position]").get_attribute("data-queue-position"))
                  for i in waiting]
        assert places[1] == places[0] + 1
        expect(page.locator(f"tr[data-run-id='{waiting[0]}']")).to_contain_text(f"#{places[0]} in queue")
        expect(page.locator(f"tr[data-run-id='{trained['run']['id']}'] [data-queue-position]")).to_have_count(0)
        page.fill("#filter-q", f"{token} waiting 1")
        expect(page.locator("#runs-body tr[data-run-id]")).to_have_count(1)
        page.fill("#filter-q", token)

        page.click("#columns-picker summary")
        page.check("input[data-metric-column='eval/accuracy']")
        page.fill("#columns-config-key", "method.r")
        page.click("#columns-config-add")
        row = page.locator(f"tr[data-run-id='{trained['run']['id']}']")
        expect(page.locator("th[data-extra-column='eval/accuracy']")).to_have_text("eval/accuracy (best)")
        best = max(v for _, v in api.get(f"/api/runs/{trained['run']['id']}/metrics",
                                          params={"names": "eval/accuracy"}).json()["series"]["eval/accuracy"])
        expect(row.locator("td[data-extra-column='eval/accuracy']")).not_to_have_text("—")
        shown = float(row.locator("td[data-extra-column='eval/accuracy']").inner_text())
        assert shown == pytest.approx(best, abs=1e-3)
        expect(row.locator("td[data-extra-column='method.r']")).to_have_text("8")

        page.reload()  # the chosen columns are remembered
        expect(page.locator("th[data-extra-column='eval/accuracy']")).to_have_count(1)
        expect(page.locator("th[data-extra-column='method.r']")).to_have_count(1)
        expect(page.locator(f"tr[data-run-id='{trained['run']['id']}'] td[data-extra-column='method.r']")).to_have_text("8")
    finally:
        for run_id in waiting:
            api.post(f"/api/runs/{run_id}/cancel")
            api.delete(f"/api/runs/{run_id}")
