"""The experiment form and page, the per-sample view and the playground, in headless Chromium
against the real stack (server + worker)."""
import re
import uuid

import pytest

from tests.conftest import wait_for_status
from tests.e2e.test_ui_pages import upload_via_api

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

TRAINING = {"max_steps": 4, "batch_size": 8, "eval_every": 4, "max_length": 32}


@pytest.fixture(scope="module")
def dataset(api):
    return upload_via_api(api, f"reviews-exp-{uuid.uuid4().hex[:6]}")


def fill_common(page, dataset, model_id, name):
    page.goto("/experiments")
    page.fill("#exp-name", name)
    page.select_option("#exp-dataset", str(dataset["id"]))
    page.select_option("#exp-model", model_id)
    expect(page.locator("#exp-col-text")).to_have_value("text")
    expect(page.locator("#exp-col-label")).to_have_value("label")
    for field, value in TRAINING.items():
        page.fill(f"#exp-tr-{field}", str(value))


def test_methods_experiment_from_the_form_lists_its_runs(page, api, dataset, model_id):
    fill_common(page, dataset, model_id, "form methods")
    page.uncheck("input[name=exp-method][value=full]")
    page.check("input[name=exp-method][value=prompt]")
    page.click("#exp-submit")
    page.wait_for_url(re.compile(r"/experiments/\d+$"))
    experiment_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("#experiment-name")).to_have_text("form methods")
    rows = page.locator("#experiment-runs-body tr[data-run-id]")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("LoRA")
    expect(rows.nth(1)).to_contain_text("Prompt-tuning")
    expect(page.locator("nav a.active")).to_have_text("Experiments")

    x = api.get(f"/api/experiments/{experiment_id}").json()
    assert [r["method"] for r in x["runs"]] == ["lora", "prompt"]
    assert all(r["config"]["training"]["max_steps"] == 4 and r["config"]["columns"]["text"] == "text" for r in x["runs"])
    for run in x["runs"]:
        done = wait_for_status(lambda r=run: api.get(f"/api/runs/{r['id']}").json(), ("succeeded", "failed"))
        assert done["status"] == "succeeded", done["error"]

    # Once the runs have succeeded the page shows it, links the per-sample view and embeds the comparison.
    expect(page.locator("#experiment-runs-body tr[data-status=succeeded]")).to_have_count(2, timeout=20_000)
    expect(page.locator("#experiment-compare")).not_to_contain_text("Loading the comparison")
    link = page.locator("#experiment-samples")
    expect(link).to_be_visible()
    link.click()
    page.wait_for_url(re.compile(r"/samples\?runs="))
    expect(page.locator("#samples-head th[data-run-id]")).to_have_count(2)
    expect(page.locator("#samples-body tr[data-row]").first).to_be_visible()
    page.check("input[name=samples-filter][value=disagree]")
    expect(page).to_have_url(re.compile(r"filter=disagree"))


def test_grid_builder_counts_runs_and_shows_errors_without_creating_any(page, api, dataset, model_id):
    before = len(api.get("/api/experiments").json())
    fill_common(page, dataset, model_id, "form grid")
    page.check("input[name=exp-kind][value=grid]")
    expect(page.locator("#exp-grid")).to_be_visible()
    expect(page.locator("#exp-methods")).to_be_hidden()
    expect(page.locator("#exp-grid-count")).to_have_text("4 runs")  # the starting rows: 2 rates × 2 ranks
    page.locator(".grid-values").nth(1).fill("4, 0, 8")
    expect(page.locator("#exp-grid-count")).to_have_text("6 runs")
    page.click("#exp-submit")
    error = page.locator("#experiment-form-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("method.r=0")
    assert page.url.endswith("/experiments")
    assert len(api.get("/api/experiments").json()) == before


def test_playground_shows_base_and_adapted_answers(page, api, dataset, model_id):
    body = {"name": "playground lora", "dataset_id": dataset["id"], "base_model": model_id,
            "columns": {"text": "text", "label": "label"}, "method": {"type": "lora", "r": 4, "dropout": 0.0},
            "training": {**TRAINING, "learning_rate": 0.03}}
    run = api.post("/api/runs", json=body).json()
    done = wait_for_status(lambda: api.get(f"/api/runs/{run['id']}").json(), ("succeeded", "failed"))
    assert done["status"] == "succeeded", done["error"]

    page.goto(f"/playground?run={run['id']}")
    expect(page.locator("#playground-run")).to_have_value(str(run["id"]))
    expect(page.locator("#playground-generation")).to_be_hidden()  # classification: no generation controls
    page.fill("#playground-inputs", "good movie\n<i>awful</i> film")
    page.click("#playground-submit")
    results = page.locator(".try-result")
    expect(results).to_have_count(2, timeout=60_000)
    expect(results.nth(1).locator(".try-input")).to_have_text("<i>awful</i> film")  # text, not markup
    answers = results.nth(0).locator(".try-answer")
    expect(answers).to_have_count(2)
    expect(answers.nth(0)).to_have_attribute("data-model", "base")  # base model on the left
    expect(answers.nth(1)).to_have_attribute("data-model", "run")
    for model in ("base", "run"):
        bars = results.nth(0).locator(f'.try-answer[data-model="{model}"] .prob-row')
        expect(bars).to_have_count(2)
        probs = [float(bars.nth(i).get_attribute("data-prob")) for i in range(2)]
        assert sum(probs) == pytest.approx(1, abs=1e-3)
    expect(page.locator("nav a.active")).to_have_text("Playground")
