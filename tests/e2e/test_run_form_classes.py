"""The New run form's learning-rate schedule and class names: an AG-News-like headerless CSV, named on its
dataset page, trains with a cosine schedule and shows World/Sports/Business/Sci/Tech on the run page."""
import math
import re

import pytest

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

AG = ["World", "Sports", "Business", "Sci/Tech"]
WORDS = {1: "election minister vote", 2: "match goal team", 3: "market shares profit", 4: "software chip space"}


def test_schedule_and_class_names_from_the_form(page, api, model_id):
    csv = "".join(f"{1 + i % 4},headline {i},{WORDS[1 + i % 4]} {i}\n" for i in range(48)).encode()
    ds = api.post("/api/datasets", files={"file": ("ag.csv", csv)}, data={"has_header": "false"}).json()
    assert api.patch(f"/api/datasets/{ds['id']}", json={"columns": ["label", "title", "text"]}).status_code == 200

    page.goto(f"/runs/new?dataset_id={ds['id']}")
    expect(page.locator("#run-dataset")).to_have_value(str(ds["id"]))
    page.select_option("#run-model", model_id)
    page.select_option("#col-text", "text")
    page.select_option("#col-label", "label")
    expect(page.locator("#label-values-hint")).to_contain_text("Values of label, in order: 1, 2, 3, 4")
    expect(page.locator("#tr-lr_scheduler")).to_have_value("linear")  # the default

    # Three names for four values: the server's reason shows beside the field, nothing is queued.
    page.fill("#col-label_names", "World, Sports, Business")
    page.click("#run-submit")
    expect(page.locator('[data-error-for="columns.label_names"]')).to_contain_text("3 class names for 4 label values")
    assert page.url.endswith(f"/runs/new?dataset_id={ds['id']}")

    page.fill("#col-label_names", ", ".join(AG))
    page.select_option("#tr-lr_scheduler", "cosine")
    for field, value in {"max_steps": 6, "batch_size": 8, "eval_every": 6, "max_length": 32, "learning_rate": 0.01,
                         "warmup_ratio": 0}.items():
        page.fill(f"#tr-{field}", str(value))
    page.click("#run-submit")
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    run_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    expect(page.locator("#run-status .badge")).to_have_text("succeeded", timeout=180_000)
    run = api.get(f"/api/runs/{run_id}").json()
    assert run["config"]["columns"]["label_names"] == AG and run["config"]["training"]["lr_scheduler"] == "cosine"

    # train/lr follows half a cosine from the peak.
    lrs = [v for _, v in api.get(f"/api/runs/{run_id}/metrics?names=train/lr").json()["series"]["train/lr"]]
    assert lrs == pytest.approx([0.01 * 0.5 * (1 + math.cos(math.pi * s / 6)) for s in range(6)])

    # The confusion matrix and Try it speak in class names.
    expect(page.locator("#confusion-card")).to_be_visible(timeout=30_000)
    expect(page.locator("#confusion-matrix thead")).to_contain_text(re.compile("World|Sports|Business|Sci/Tech"))
    shown = api.get(f"/api/runs/{run_id}/confusion").json()["labels"]  # the classes of the small eval split
    assert shown and shown == [name for name in AG if name in shown]
    page.fill("#try-inputs", "match goal team")
    page.click("#try-submit")
    labels = page.locator(".try-result .prob-label")
    expect(labels).to_have_count(4, timeout=60_000)
    assert sorted(labels.all_text_contents()) == sorted(AG)
    answer = api.post(f"/api/runs/{run_id}/predict", json={"inputs": ["vote"]})
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    assert output["label"] in AG and set(output["probs"]) == set(AG)

    # Clone: the form comes back with the names and the schedule.
    page.goto(f"/runs/new?clone={run_id}")
    expect(page.locator("#col-label_names")).to_have_value(", ".join(AG))
    expect(page.locator("#tr-lr_scheduler")).to_have_value("cosine")
