"""The search experiment in headless Chromium against the real stack: launched from the form, its page shows
the trials with their states, the best trial and the parallel-coordinates chart; a bad range is refused in
the form with the server's message and nothing is made."""
import re
import uuid

import pytest

from tests.conftest import search_finished
from tests.e2e.test_experiments_pages import TRAINING, fill_common
from tests.e2e.test_ui_pages import upload_via_api

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def dataset(api):
    return upload_via_api(api, f"reviews-search-{uuid.uuid4().hex[:6]}")


def fill_search(page, dataset, model_id, name):
    fill_common(page, dataset, model_id, name)
    page.check("input[name=exp-kind][value=search]")
    expect(page.locator("#exp-search")).to_be_visible()
    expect(page.locator("#exp-grid")).to_be_hidden()


def test_a_search_from_the_form_shows_trials_best_and_chart(page, api, dataset, model_id):
    fill_search(page, dataset, model_id, "form search")
    page.fill("#exp-search-trials", "3")
    page.fill("#exp-search-parallelism", "1")
    page.select_option("#exp-search-metric", "eval/loss")
    row = page.locator(".space-row").first
    row.locator(".space-low").fill("1e-4")
    row.locator(".space-high").fill("5e-2")
    page.click("#exp-space-add")
    second = page.locator(".space-row").nth(1)
    second.locator(".space-key").fill("method.r")
    second.locator(".space-type").select_option("choice")
    expect(second.locator(".space-low")).to_be_hidden()
    second.locator(".space-choices").fill("2, 4")
    page.click("#exp-submit")
    page.wait_for_url(re.compile(r"/experiments/\d+$"))
    experiment_id = int(page.url.rsplit("/", 1)[1])

    x = api.get(f"/api/experiments/{experiment_id}").json()
    assert x["kind"] == "search" and x["spec"]["trials"] == 3
    assert x["spec"]["space"]["method.r"] == {"type": "choice", "choices": [2, 4]}
    assert x["search"]["metric"] == "eval/loss" and x["search"]["direction"] == "minimize"
    assert all(r["config"]["training"]["max_steps"] == TRAINING["max_steps"] for r in x["runs"])
    expect(page.locator("#experiment-subtitle")).to_contain_text("Search over training.learning_rate, method.r")
    expect(page.locator("#search-about")).to_contain_text("3 trials by TPE, 1 at a time, median pruner; minimise eval/loss")
    expect(page.locator("#search-trials-body tr[data-trial]").first).to_be_visible()

    x = search_finished(api, experiment_id, 300)
    search = x["search"]
    rows = page.locator("#search-trials-body tr[data-trial]")
    expect(rows).to_have_count(3, timeout=15_000)
    for trial in search["trials"]:
        expect(page.locator(f"#search-trials-body tr[data-trial='{trial['number']}']")).to_have_attribute(
            "data-state", trial["state"], timeout=15_000)
    best = search["best"]
    assert best is not None
    expect(page.locator("[data-best-trial]")).to_have_text(f"trial {best['number']}")
    expect(page.locator("#search-trials-body tr.is-best")).to_have_attribute("data-trial", str(best["number"]))
    expect(page.locator("#search-best dd[data-param='method.r']")).to_have_text(str(best["params"]["method.r"]))
    expect(page.locator(f"#search-counts li[data-count=done]")).to_contain_text(f"{search['counts']['done']} done")
    # The chart: ECharts drew one line per trial with a value, on a canvas.
    drawn = sum(1 for t in search["trials"] if t["value"] is not None and t["state"] in ("done", "pruned"))
    expect(page.locator("#search-chart")).to_have_attribute("data-lines", str(drawn))
    expect(page.locator("#search-chart canvas")).to_have_count(1)
    assert page.evaluate("typeof window.echarts.getInstanceByDom(document.querySelector('#search-chart'))") == "object"

    page.goto("/experiments")
    expect(page.locator(f"#experiments-body tr[data-experiment-id='{experiment_id}']")).to_contain_text("Search")


def test_a_log_uniform_range_from_zero_is_refused_in_the_form(page, api, dataset, model_id):
    before = len(api.get("/api/experiments").json())
    fill_search(page, dataset, model_id, "bad search")
    page.locator(".space-row").first.locator(".space-low").fill("0")
    page.click("#exp-submit")
    error = page.locator("#experiment-form-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("space.training.learning_rate")
    expect(error).to_contain_text("log-uniform range needs low > 0")
    assert page.url.endswith("/experiments")
    assert len(api.get("/api/experiments").json()) == before
