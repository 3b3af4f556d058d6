"""Browser checks of what a new user meets in the first hour: the favicon, the upload picker, the eval panel
after a reload, Try it's order, configs as YAML files, notifications in Settings, and wide tables at 1280 px."""
import re
import uuid

import pytest

from tests.conftest import wait_for_status

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

CSV = "text,label\n" + "".join(f"good great film {i},pos\nbad awful film {i},neg\n" for i in range(16))


@pytest.fixture(scope="module")
def dataset(api):
    return api.post("/api/datasets", files={"file": ("first-hour.csv", CSV.encode())}).json()


@pytest.fixture(scope="module")
def finished_run(api, dataset, model_id):
    """A LoRA run trained to the end whose only evaluation is the final one (eval_every > max_steps)."""
    body = {"name": f"first hour {uuid.uuid4().hex[:6]}", "dataset_id": dataset["id"], "base_model": model_id,
            "task": "classification", "eval_fraction": 0.25, "columns": {"text": "text", "label": "label"},
            "method": {"type": "lora", "r": 4}, "training": {"max_steps": 4, "batch_size": 8, "eval_every": 100,
                                                              "learning_rate": 0.01}}
    run = api.post("/api/runs", json=body).json()
    run = wait_for_status(lambda: api.get(f"/api/runs/{run['id']}").json(), ("succeeded", "failed"))
    assert run["status"] == "succeeded", run
    return run


def test_the_favicon_and_the_gzip_upload_picker(page):
    failed = []
    page.on("response", lambda res: failed.append(res.url) if res.status >= 400 else None)
    page.goto("/datasets")
    expect(page.locator("link[rel=icon]")).to_have_attribute("href", "/favicon.ico")
    assert ".gz" in page.locator("#upload-file").get_attribute("accept").split(",")
    response = page.request.get("/favicon.ico")
    assert response.status == 200 and response.headers["content-type"] == "image/x-icon"
    assert not failed, failed


def test_the_evaluation_panel_shows_the_final_evaluation_after_a_reload(page, finished_run):
    page.goto(f"/runs/{finished_run['id']}")
    for _ in range(2):  # the first visit, then a reload
        expect(page.locator("#run-status .badge")).to_have_text("succeeded")
        expect(page.locator("#chart-loss")).not_to_have_attribute("data-points", "0")
        evaluation = page.locator("#chart-eval")
        expect(evaluation).not_to_have_attribute("data-points", "0")
        expect(evaluation.locator(".chart-empty")).to_have_count(0)
        expect(evaluation.locator("canvas")).to_be_visible()
        page.reload()


def test_the_evaluation_panel_survives_a_reload_mid_run(page, api, dataset, model_id):
    body = {"name": "long enough to reload", "dataset_id": dataset["id"], "base_model": model_id,
            "task": "classification", "eval_fraction": 0.25, "columns": {"text": "text", "label": "label"},
            "method": {"type": "lora", "r": 4}, "training": {"max_steps": 400, "batch_size": 4, "eval_every": 5}}
    run = api.post("/api/runs", json=body).json()
    try:
        page.goto(f"/runs/{run['id']}")
        evaluation = page.locator("#chart-eval")
        expect(evaluation).not_to_have_attribute("data-points", "0", timeout=120_000)
        page.reload()
        expect(page.locator("#chart-loss")).not_to_have_attribute("data-points", "0", timeout=30_000)
        expect(evaluation).not_to_have_attribute("data-points", "0", timeout=30_000)
        expect(evaluation.locator(".chart-empty")).to_have_count(0)
    finally:
        api.post(f"/api/runs/{run['id']}/cancel")


def test_try_it_shows_the_base_model_first_like_the_playground(page, finished_run):
    page.goto(f"/runs/{finished_run['id']}")
    expect(page.locator("#try-it")).to_be_visible()
    page.fill("#try-inputs", "good great film")
    page.get_by_label("Compare with the base model").set_checked(True)
    page.click("#try-submit")
    answers = page.locator(".try-result").nth(0).locator(".try-answer")
    expect(answers).to_have_count(2, timeout=60_000)
    expect(answers.nth(0)).to_have_attribute("data-model", "base")
    expect(answers.nth(1)).to_have_attribute("data-model", "run")


def test_export_a_config_and_start_a_run_from_the_file(page, api, finished_run, tmp_path):
    page.goto(f"/runs/{finished_run['id']}")
    link = page.locator("#config-yaml")
    expect(link).to_have_attribute("href", f"/api/runs/{finished_run['id']}/config.yaml")
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == f"peftlab-run-{finished_run['id']}.yaml"

    page.goto("/runs/new")
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nmethod: {type: lora\n")
    page.set_input_files("#run-yaml", str(bad))
    expect(page.locator("#run-yaml-error")).to_contain_text("broken.yaml: The file is not valid YAML at line")
    page.set_input_files("#run-yaml", str(saved))
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    new_id = int(page.url.rsplit("/", 1)[1])
    assert new_id != finished_run["id"]
    assert api.get(f"/api/runs/{new_id}").json()["config"] == finished_run["config"]
    api.post(f"/api/runs/{new_id}/cancel")


def test_add_send_and_delete_a_webhook_in_settings(page):
    page.goto("/settings")
    expect(page.locator("#webhook-project option")).not_to_have_count(0)
    page.fill("#webhook-url", "ftp://nowhere")
    page.click("#webhook-form button[type=submit]")
    expect(page.locator("#webhook-error")).to_contain_text("http:// or https://")
    page.fill("#webhook-url", "http://127.0.0.1:9/hook")
    page.check("#webhook-events input[value='run.cancelled']")
    page.click("#webhook-form button[type=submit]")
    row = page.locator("#webhooks-body tr[data-webhook-id]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("run.succeeded, run.failed, run.cancelled")
    row.get_by_role("button", name="Send test").click()
    expect(row).to_contain_text("test failed")
    row.get_by_role("button", name="Delete").click()
    expect(page.locator("#webhooks-body tr[data-webhook-id]")).to_have_count(0)


def _visible_without_scrolling(page, selector: str) -> None:
    """The cell is inside the viewport and inside its table's visible box: nothing to scroll sideways to."""
    cell = page.locator(selector).first
    expect(cell).to_be_attached()
    box = cell.bounding_box()
    wrap = cell.evaluate("c => { const w = c.closest('.table-wrap'); const r = w.getBoundingClientRect(); "
                         "return {left: r.left, right: r.right, scroll: w.scrollWidth, client: w.clientWidth, "
                         "columns: [...w.querySelectorAll('thead th')].map(th => Math.round(th.offsetWidth))}; }")
    assert box and box["width"] > 0 and box["x"] + box["width"] <= min(1280, wrap["right"]) + 1, f"{selector}: {box} {wrap}"
    assert wrap["scroll"] <= wrap["client"] + 1, f"{selector}: {wrap}"
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280, "the page itself scrolls sideways"


@pytest.fixture(scope="module")
def close_runs(dataset):
    """Three finished runs whose efficiency points sit close together (written straight into the database)."""
    from datetime import timedelta

    from app.db import session_scope, utcnow
    from app.runs.models import Run

    ids = []
    for params, acc, tokens in ((74_000, 0.81, 5200.0), (80_000, 0.815, 5100.0), (296_000, 0.86, 4900.0)):
        with session_scope() as s:
            # Configs that differ (not only by seed): three runs, not one group of repeats.
            run = Run(name=f"lora {params // 1000}k with a longish name", status="succeeded",
                      config={"method": {"type": "lora", "r": params // 1000}},
                      dataset_id=dataset["id"], base_model="minilm-l6", method="lora", task="classification",
                      progress=1.0, started_at=utcnow() - timedelta(minutes=5), finished_at=utcnow(),
                      summary={"trainable_params": params, "total_params": 22_700_000, "adapter_bytes": params * 4,
                               "peak_memory_bytes": 900_000_000, "train_samples_per_s": 120.0,
                               "train_tokens_per_s": tokens, "eval": {"accuracy": acc, "f1": acc - 0.01, "loss": 0.4}})
            s.add(run)
            s.flush()
            ids.append(run.id)
    return ids


def _overlap(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]


def test_efficiency_labels_do_not_cover_markers(page, close_runs):
    page.goto(f"/compare?runs={','.join(map(str, close_runs))}")
    chart = page.locator(".compare-efficiency")
    expect(chart).to_have_attribute("data-label-boxes", re.compile(r"\[\{"))
    import json

    labels = json.loads(chart.get_attribute("data-label-boxes"))
    markers = json.loads(chart.get_attribute("data-marker-boxes"))
    assert len(labels) == len(markers) == 3
    for label in labels:
        assert not any(_overlap(label, m) for m in markers), (label, markers)
        assert not any(_overlap(label, other) for other in labels if other is not label), labels


def test_wide_tables_keep_their_last_columns_reachable_at_1280px(page, finished_run, close_runs):
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/runs")
    expect(page.locator("#runs-body tr").first).to_be_visible()
    for cell in ("thead th[data-sort=created]", "thead th[data-sort=duration]", "#runs-body tr td:last-child"):
        _visible_without_scrolling(page, cell)
    page.goto(f"/compare?runs={','.join(map(str, [finished_run['id'], *close_runs]))}")
    for header in ("Tokens/s", "Wall time"):
        _visible_without_scrolling(page, f".compare-summary th:text-is('{header}')")
