"""Browser tests of groups of seeds: the compare page's bands, intervals, error bars and the difference
between two groups in words; the per-sample rows one group gets right and the other wrong; and launching
repeats and budgets from the Experiments and New run forms (those train on the stack's worker)."""
import json
import re
import uuid
from datetime import timedelta

import pytest

from app.artifacts.service import record_artifact, run_artifact_dir
from app.db import session_scope, utcnow
from app.metrics.service import record_points
from app.runs.models import Run
from tests.conftest import wait_for_status
from tests.e2e.test_ui_pages import upload_via_api

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

LORA = [0.84, 0.86, 0.83]
PROMPT = [0.70, 0.73, 0.71]
EVAL_ROWS = [0, 1, 2, 3]  # rows of the uploaded reviews: LoRA's seeds get 0-2 right, prompt's get 0-1 wrong


def _config(dataset_id: int, method: str, seed: int) -> dict:
    return {"name": f"{method} · seed {seed}", "dataset_id": dataset_id, "eval_dataset_id": None, "eval_fraction": 0.2,
            "eval_split_seed": 0, "base_model": "minilm-l6", "task": "classification",
            "columns": {"text": "text", "label": "label"}, "method": {"type": method},
            "training": {"learning_rate": 0.003, "epochs": 2, "batch_size": 8, "seed": seed, "eval_every": 10}}


@pytest.fixture(scope="module")
def groups(api, settings):
    """Three seeds of LoRA and three of prompt-tuning, succeeded, with curves and stored predictions."""
    ds = upload_via_api(api, f"reviews-groups-{uuid.uuid4().hex[:6]}")
    rows = api.get(f"/api/datasets/{ds['id']}/rows?limit=4").json()["rows"]
    truth = [str(r["label"]) for r in rows]
    other = {label: next(x for x in set(truth) | {"__other__"} if x != label) for label in truth}
    ids = {"lora": [], "prompt": []}
    for method, accs in (("lora", LORA), ("prompt", PROMPT)):
        for seed, acc in enumerate(accs):
            started = utcnow() - timedelta(minutes=10)
            with session_scope() as s:
                run = Run(name=f"{method} · seed {seed}", status="succeeded", config=_config(ds["id"], method, seed),
                          dataset_id=ds["id"], base_model="minilm-l6", method=method, task="classification",
                          progress=1.0, started_at=started, finished_at=started + timedelta(minutes=2),
                          summary={"trainable_params": 150_000 if method == "lora" else 8_000, "total_params": 22_700_000,
                                   "eval": {"accuracy": acc, "loss": 1 - acc}})
                s.add(run)
                s.flush()
                t0 = 1_700_000_000.0
                points = [("train/loss", st, 2.0 / (1 + st / (20 + seed)), t0 + st) for st in range(0, 100)]
                points += [("eval/accuracy", st, acc * st / 90, t0 + st) for st in range(10, 100, 10)]
                record_points(s, run.id, points)
                run_id = run.id
            ids[method].append(run_id)
            path = run_artifact_dir(settings, run_id, "predictions") / "predictions.jsonl"
            with open(path, "w") as f:
                for row, label in zip(EVAL_ROWS, truth):
                    right = row <= 2 if method == "lora" else row >= 2
                    f.write(json.dumps({"row": row, "label": label, "prediction": label if right else other[label],
                                        "probs": [0.9, 0.1]}) + "\n")
            with session_scope() as s:
                record_artifact(s, run_id, "predictions", path)
    yield ids
    for run_id in ids["lora"] + ids["prompt"]:
        api.delete(f"/api/runs/{run_id}")


def test_grouped_compare_shows_bands_intervals_and_the_difference(page, groups):
    ids = groups["lora"] + groups["prompt"]
    page.goto(f"/compare?runs={','.join(map(str, ids))}")
    expect(page.locator("#comparison")).to_have_attribute("data-charts-ready", "1", timeout=30_000)  # the first grouped comparison loads scipy.special
    loss = page.locator(".compare-chart[data-metric='train/loss']")
    expect(loss).to_have_attribute("data-series-count", "2")  # one mean line per group …
    expect(loss).to_have_attribute("data-bands", "2")  # … over a band of its seeds
    expect(loss.locator(".u-legend .u-series:visible")).to_have_count(3)  # x, and the two means
    expect(loss.locator(".u-legend")).to_contain_text("lora (mean of 3)")

    table = page.locator(".compare-groups tbody tr")
    expect(table).to_have_count(2)
    expect(table.nth(0)).to_contain_text("lora")
    expect(table.nth(0)).to_contain_text("0.8433 ± ")  # mean of LORA ± half its 95% interval
    expect(table.nth(1)).to_contain_text("0.7133 ± ")

    sentence = page.locator(".compare-sentence")
    expect(sentence).to_contain_text(re.compile(r"lora is 13\.0 ± [\d.]+ points better than prompt in eval accuracy"))
    expect(sentence).to_contain_text("3 seeds each")
    expect(page.locator(".compare-finding")).to_have_attribute("data-distinguishable", "true")
    expect(page.locator(".compare-pairs tbody tr")).to_have_count(1)
    expect(page.locator(".compare-efficiency")).to_have_attribute("data-error-bars", "2")

    # Eval loss instead: the same two groups, lower is better.
    page.select_option("#compare-diff-metric", "eval/loss")
    expect(sentence).to_contain_text("lower than prompt in eval loss")

    # Each run again: six lines, no bands.
    page.get_by_label("Each run").check()
    expect(loss).to_have_attribute("data-series-count", "6")
    expect(loss).to_have_attribute("data-bands", "0")


def test_the_compare_page_links_rows_every_seed_of_a_gets_right_and_b_wrong(page, groups):
    ids = groups["lora"] + groups["prompt"]
    page.goto(f"/compare?runs={','.join(map(str, ids))}")
    link = page.locator("a[data-link='a-right-b-wrong']")
    expect(link).to_contain_text("every seed of lora gets right and every seed of prompt gets wrong", timeout=30_000)
    link.click()
    page.wait_for_url(re.compile(r"/samples\?a=[\d,]+&b=[\d,]+&filter=a_right_b_wrong"))
    expect(page.locator("input[name=samples-filter][value=a_right_b_wrong]")).to_be_checked()
    expect(page.locator("#samples-body tr[data-row]")).to_have_count(2)  # rows 0 and 1
    expect(page.locator("#samples-body tr[data-row='0']")).to_have_count(1)
    expect(page.locator("#samples-head th[data-side=A]")).to_have_count(3)
    expect(page.locator("[data-count=a_right_b_wrong]")).to_have_text("(2)")
    page.get_by_label(re.compile("Every seed of B right")).check()
    expect(page.locator("#samples-body tr[data-row]")).to_have_count(1)  # row 3
    expect(page.locator("#samples-body tr[data-row='3']")).to_have_count(1)


def test_single_runs_compare_as_before(page, groups):
    a, b = groups["lora"][0], groups["prompt"][0]
    page.goto(f"/compare?runs={a},{b}")
    expect(page.locator("#comparison")).to_have_attribute("data-charts-ready", "1", timeout=30_000)
    expect(page.locator(".compare-chart[data-metric='train/loss']")).to_have_attribute("data-series-count", "2")
    expect(page.locator(".compare-groups-card")).to_be_hidden()
    expect(page.locator(".compare-view-switch")).to_be_hidden()
    expect(page.locator(".compare-summary tbody tr")).to_have_count(2)


def test_experiment_form_runs_every_method_with_seeds_and_a_token_budget(page, api, model_id):
    ds = upload_via_api(api, f"reviews-budget-{uuid.uuid4().hex[:6]}")
    page.goto("/experiments")
    page.fill("#exp-name", "budgeted seeds")
    page.select_option("#exp-dataset", str(ds["id"]))
    page.select_option("#exp-model", model_id)
    page.uncheck("input[name=exp-method][value=full]")  # LoRA only
    for field, value in {"batch_size": 8, "eval_every": 1000, "max_length": 32}.items():
        page.fill(f"#exp-tr-{field}", str(value))
    page.select_option("#exp-budget-kind", "tokens")
    expect(page.locator("#exp-tr-epochs")).to_be_disabled()
    page.fill("#exp-budget-amount", "300")
    page.fill("#exp-repeats", "2")
    page.click("#exp-submit")
    page.wait_for_url(re.compile(r"/experiments/\d+$"))
    experiment = api.get(f"/api/experiments/{page.url.rsplit('/', 1)[1]}").json()
    assert experiment["spec"]["budget"] == {"kind": "tokens", "amount": 300} and experiment["spec"]["repeats"] == 2
    assert [r["config"]["training"]["seed"] for r in experiment["runs"]] == [0, 1]
    assert {r["config"]["training"]["max_tokens"] for r in experiment["runs"]} == {300}
    for run in experiment["runs"]:
        done = wait_for_status(lambda r=run: api.get(f"/api/runs/{r['id']}").json(), ("succeeded", "failed"))
        assert done["status"] == "succeeded", done["error"]
        assert done["summary"]["stopped_by"] == "max_tokens"
    page.goto(f"/runs/{experiment['runs'][0]['id']}")
    expect(page.locator("body")).to_contain_text("the token budget was spent")


def test_new_run_form_repeats_a_run_with_seeds(page, api, model_id):
    ds = upload_via_api(api, f"reviews-repeat-{uuid.uuid4().hex[:6]}")
    page.goto("/runs/new")
    page.fill("#run-name", "repeat me")
    page.select_option("#run-dataset", str(ds["id"]))
    page.select_option("#run-model", model_id)
    page.fill("#tr-max_steps", "2")
    page.fill("#tr-seed", "5")
    page.fill("#run-repeats", "3")
    # A bad setting is refused for every seed at once, and shown beside its field as for a single run.
    page.fill("#tr-batch_size", "0")
    page.click("#run-submit")
    error = page.locator(".field:has(#tr-batch_size) .field-error")
    expect(error).to_contain_text("greater than or equal to 1")
    expect(error).not_to_contain_text("every run")
    page.fill("#tr-batch_size", "8")
    page.click("#run-submit")
    page.wait_for_url(re.compile(r"/experiments/\d+$"))
    experiment = api.get(f"/api/experiments/{page.url.rsplit('/', 1)[1]}").json()
    assert experiment["kind"] == "grid" and experiment["spec"]["grid"] == {} and experiment["spec"]["repeats"] == 3
    assert [r["name"] for r in experiment["runs"]] == [f"repeat me · seed {i}" for i in (5, 6, 7)]
    assert {r["config"]["eval_split_seed"] for r in experiment["runs"]} == {5}
    for run in experiment["runs"]:
        wait_for_status(lambda r=run: api.get(f"/api/runs/{r['id']}").json(), ("succeeded", "failed", "cancelled"))
