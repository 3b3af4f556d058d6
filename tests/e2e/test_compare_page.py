"""Browser tests of comparing runs: tick two runs in the table, press Compare, read the overlaid
curves, config diff and efficiency chart; tag a run; clone a run into a prefilled form.
The runs are written straight into the database (succeeded, with metrics): nothing trains here."""
import re
import uuid
from datetime import timedelta

import httpx
import pytest

from app.db import session_scope, utcnow
from app.metrics.service import record_points
from app.runs.models import Run, RunTag

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


def _config(dataset_id: int, r: int) -> dict:
    return {"name": None, "dataset_id": dataset_id, "eval_dataset_id": None, "eval_fraction": 0.2,
            "base_model": "minilm-l6", "task": "classification", "columns": {"text": "text", "label": "label"},
            "method": {"type": "lora", "r": r, "alpha": 32, "dropout": 0.05, "target_modules": ["query", "value"]},
            "training": {"learning_rate": 0.003, "epochs": 2, "max_steps": None, "batch_size": 8, "max_length": 64,
                         "seed": 7, "eval_every": 10, "warmup_ratio": 0.0, "weight_decay": 0.0, "gradient_accumulation": 1}}


@pytest.fixture(scope="module")
def two_runs(live_stack):
    """Two succeeded LoRA runs (r = 4 and r = 16) under one fresh tag, with loss and accuracy curves."""
    with httpx.Client(base_url=live_stack.url, headers=live_stack.headers, timeout=30) as api:
        ds = api.post("/api/datasets", files={"file": ("cmp.csv", b"text,label\n" + b"good,pos\nbad,neg\n" * 10)}).json()
    tag = f"cmp-{uuid.uuid4().hex[:8]}"
    ids = []
    for i, (r, params, acc) in enumerate(((4, 74_000, 0.81), (16, 296_000, 0.86))):
        started = utcnow() - timedelta(minutes=10)
        with session_scope() as s:
            run = Run(name=f"lora r={r} {tag}", status="succeeded", config=_config(ds["id"], r), dataset_id=ds["id"],
                      base_model="minilm-l6", method="lora", task="classification", progress=1.0,
                      started_at=started, finished_at=started + timedelta(minutes=3),
                      summary={"trainable_params": params, "total_params": 22_700_000, "adapter_bytes": params * 4,
                               "train_samples_per_s": 120.0 + i, "eval": {"accuracy": acc, "f1": acc - 0.02, "loss": 0.4}})
            run.tag_rows = [RunTag(tag=tag)]
            s.add(run)
            s.flush()
            t0 = 1_700_000_000.0
            points = [("train/loss", st, 2.0 / (1 + st / (20 + i)), t0 + st) for st in range(0, 200)]
            points += [("train/epoch", st, st / 100, t0 + st) for st in range(0, 200)]
            points += [("eval/accuracy", st, acc * st / 190, t0 + st) for st in range(10, 200, 10)]
            record_points(s, run.id, points)
            ids.append(run.id)
    yield {"ids": ids, "tag": tag, "dataset": ds}
    with httpx.Client(base_url=live_stack.url, headers=live_stack.headers, timeout=30) as api:
        for run_id in ids:
            api.delete(f"/api/runs/{run_id}")


def test_select_two_runs_and_compare(page, two_runs):
    a, b = two_runs["ids"]
    page.goto(f"/runs?tag={two_runs['tag']}")
    expect(page.locator("#runs-body tr[data-run-id]")).to_have_count(2)
    expect(page.locator("#compare-selected")).to_be_disabled()
    page.check(f"input[data-select='{a}']")
    page.check(f"input[data-select='{b}']")
    expect(page.locator("#compare-selected")).to_have_text("Compare 2")
    page.click("#compare-selected")

    page.wait_for_url(re.compile(rf"/compare\?runs={a},{b}$"))
    expect(page.locator("#comparison")).to_have_attribute("data-charts-ready", "1")
    loss = page.locator(".compare-chart[data-metric='train/loss']")
    expect(loss).to_have_attribute("data-series-count", "2")
    expect(loss).to_have_attribute("data-points", "400")
    expect(page.locator(".compare-chart[data-metric='eval/accuracy']")).to_have_attribute("data-series-count", "2")
    expect(loss.locator("canvas")).to_have_count(1)
    # Two runs, two overlaid curves in the legend, one colour each.
    expect(loss.locator(".u-legend .u-series")).to_have_count(3)

    diff = page.locator(".compare-diff tbody tr")
    expect(diff).to_have_count(1)
    expect(diff.first).to_have_attribute("data-key", "method.r")
    expect(diff.first).to_contain_text("4")
    expect(diff.first).to_contain_text("16")

    expect(page.locator(".compare-efficiency")).to_have_attribute("data-points", "2")
    expect(page.locator(".compare-summary tbody tr")).to_have_count(2)
    expect(page.locator(".compare-summary")).to_contain_text("0.86")

    # The x axis switches to epochs: same runs, curves redrawn over train/epoch.
    page.get_by_label("Epoch").check()
    expect(page.locator(".compare-chart[data-metric='train/loss'] .u-legend .u-series").first).to_contain_text("epoch")


def test_tags_and_notes_are_edited_on_the_run_page(page, two_runs):
    a = two_runs["ids"][0]
    page.goto(f"/runs/{a}")
    expect(page.locator("#run-tags .tag")).to_have_text([two_runs["tag"]])
    page.click("#edit-notes")
    page.fill("#tags-input", f"{two_runs['tag']}, baseline")
    page.fill("#notes-input", "<b>not bold</b> rank 4 is enough")
    page.click("#notes-save")
    expect(page.locator("#run-tags .tag")).to_have_text(["baseline", two_runs["tag"]])
    expect(page.locator("#run-notes")).to_have_text("<b>not bold</b> rank 4 is enough")
    page.goto("/runs?tag=baseline")
    expect(page.locator(f"#runs-body tr[data-run-id='{a}']")).to_have_count(1)


def test_clone_prefills_the_form(page, two_runs):
    b = two_runs["ids"][1]
    page.goto(f"/runs/{b}")
    page.click("#clone-run")
    page.wait_for_url(re.compile(rf"/runs/new\?clone={b}$"))
    expect(page.locator("#run-name")).to_have_value(re.compile(r"lora r=16 .*\(clone\)$"))
    expect(page.locator("#run-dataset")).to_have_value(str(two_runs["dataset"]["id"]))
    expect(page.locator("input[name=method][value=lora]")).to_be_checked()
    expect(page.locator("#lora-r")).to_have_value("16")
    expect(page.locator("#lora-alpha")).to_have_value("32")
    expect(page.locator("#lora-target_modules")).to_have_value("query, value")
    expect(page.locator("#run-eval-fraction")).to_have_value("0.2")
    expect(page.locator("#col-text")).to_have_value("text")
    expect(page.locator("#tr-learning_rate")).to_have_value("0.003")
    expect(page.locator("#tr-batch_size")).to_have_value("8")
    expect(page.locator("#tr-seed")).to_have_value("7")
    expect(page.locator("#tr-epochs")).to_have_value("2")


def test_delete_a_run_from_its_page(page, live_stack, two_runs, settings):
    from app.artifacts.service import record_artifact, run_artifact_dir

    with session_scope() as s:
        template = s.get(Run, two_runs["ids"][0])
        run = Run(name="to delete", status="succeeded", config=template.config, summary={}, dataset_id=template.dataset_id,
                  base_model="minilm-l6", method="lora", task="classification", progress=1.0)
        s.add(run)
        s.flush()
        run_id = run.id
        record_points(s, run_id, [("train/loss", 1, 1.0)])
    adapter = run_artifact_dir(settings, run_id, "adapter")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    with session_scope() as s:
        record_artifact(s, run_id, "adapter", adapter)
    page.goto(f"/runs/{run_id}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-run")
    expect(page).to_have_url(re.compile(r"/runs$"))
    with httpx.Client(base_url=live_stack.url, headers=live_stack.headers, timeout=30) as api:
        assert api.get(f"/api/runs/{run_id}").status_code == 404
    assert not adapter.exists()  # the artifacts went with it
