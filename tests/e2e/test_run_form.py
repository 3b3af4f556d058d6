"""The run form for every method (fields, live parameter count, AdapterFusion's picker) and the
run page's "Try it" panel, in headless Chromium against the real stack."""
import re
import uuid

import pytest

from tests.conftest import wait_for_status
from tests.e2e.test_ui_pages import upload_via_api

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

METHODS = ("lora", "adapter", "adapter_fusion", "prefix", "ptuning", "prompt", "full")
TRAINING = {"max_steps": 6, "batch_size": 8, "eval_every": 6, "max_length": 32, "learning_rate": 0.01}


@pytest.fixture(scope="module")
def dataset(api):
    return upload_via_api(api, f"reviews-form-{uuid.uuid4().hex[:6]}")


def expected_count(api, model_id, method: dict) -> int:
    res = api.post(f"/api/models/{model_id}/estimate", json={"task": "classification", "num_labels": 2, "method": method})
    assert res.status_code == 200, res.text
    return res.json()["trainable_params"]


def open_form(page, dataset, model_id):
    page.goto(f"/runs/new?dataset_id={dataset['id']}")
    expect(page.locator("#run-dataset")).to_have_value(str(dataset["id"]))
    page.select_option("#run-model", model_id)


def test_each_method_shows_its_fields_and_a_parameter_count(page, api, dataset, model_id):
    open_form(page, dataset, model_id)
    estimate = page.locator("#param-estimate")
    defaults = {"lora": {"type": "lora"}, "adapter": {"type": "adapter"}, "prefix": {"type": "prefix"},
                "ptuning": {"type": "ptuning"}, "prompt": {"type": "prompt"}, "full": {"type": "full"}}
    for method in METHODS:
        page.check(f"input[name=method][value={method}]")
        for other in METHODS:
            if other == method:
                expect(page.locator(f"#{other}-fields")).to_be_visible()
            else:
                expect(page.locator(f"#{other}-fields")).to_be_hidden()
        if method in defaults:
            expect(estimate).to_have_attribute("data-trainable", str(expected_count(api, model_id, defaults[method])))
            expect(estimate).to_contain_text(re.compile(r"Trainable parameters: [\d,]+ \([\d.]+% of the model\)"))
    # Documented defaults are in the fields.
    page.check("input[name=method][value=ptuning]")
    expect(page.locator("#ptuning-encoder")).to_have_value("mlp")
    expect(page.locator("#ptuning-encoder_hidden_size")).to_have_value("128")
    # The count follows the settings as they are typed.
    page.check("input[name=method][value=lora]")
    page.fill("#lora-r", "2")
    expect(estimate).to_have_attribute("data-trainable", str(expected_count(api, model_id, {"type": "lora", "r": 2})))
    page.check("input[name=method][value=adapter]")
    page.select_option("#adapter-variant", "pfeiffer")
    expect(estimate).to_have_attribute("data-trainable",
                                       str(expected_count(api, model_id, {"type": "adapter", "variant": "pfeiffer"})))


def test_the_form_follows_the_registry_and_fills_preset_learning_rates(page, api, dataset, model_id):
    """Every registered method has its option and settings (from its spec's JSON schema), and choosing
    one fills in its preset learning rate."""
    specs = api.get("/api/methods").json()
    open_form(page, dataset, model_id)
    expect(page.locator("input[name=method]")).to_have_count(len(specs))
    for spec in specs:
        page.check(f"input[name=method][value={spec['name']}]")
        expect(page.locator("#tr-learning_rate")).to_have_value(str(spec["learning_rate"]))
        for field, prop in spec["settings_schema"]["properties"].items():
            if field == "type" or prop.get("x-show-if"):
                continue
            expect(page.locator(f"#{spec['name']}-{field}")).to_be_visible()
            if "default" in prop and isinstance(prop["default"], (int, float)) and not isinstance(prop["default"], bool):
                value = page.locator(f"#{spec['name']}-{field}").input_value()
                assert float(value) == prop["default"], (spec["name"], field)


def test_prompt_init_text_is_asked_for_beside_its_field(page, api, dataset, model_id):
    runs_before = len(api.get("/api/runs").json())
    open_form(page, dataset, model_id)
    page.check("input[name=method][value=prompt]")
    expect(page.locator("#prompt-init_text")).to_be_hidden()
    page.select_option("#prompt-init", "text")
    expect(page.locator("#prompt-init_text")).to_be_visible()
    page.click("#run-submit")
    error = page.locator('.field:has(#prompt-init_text) .field-error')
    expect(error).to_be_visible()
    expect(page.locator("#prompt-init_text")).to_have_attribute("aria-invalid", "true")
    # A server-side field error of another method lands beside its field too.
    page.check("input[name=method][value=ptuning]")
    page.fill("#ptuning-encoder_hidden_size", "0")
    page.click("#run-submit")
    expect(page.locator('.field:has(#ptuning-encoder_hidden_size) .field-error')).to_contain_text("greater than or equal to 1")
    assert len(api.get("/api/runs").json()) == runs_before


def test_adapter_run_fusion_picker_and_try_it(page, api, dataset, model_id):
    # An Adapter run launched from the form trains to success.
    open_form(page, dataset, model_id)
    page.check("input[name=method][value=adapter]")
    page.fill("#adapter-reduction_factor", "4")
    page.fill("#run-name", "form adapter")
    for field, value in TRAINING.items():
        page.fill(f"#tr-{field}", str(value))
    page.click("#run-submit")
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    first = int(page.url.rstrip("/").rsplit("/", 1)[1])
    expect(page.locator("#run-status .badge")).to_have_text("succeeded", timeout=180_000)
    run = api.get(f"/api/runs/{first}").json()
    assert run["method"] == "adapter" and run["config"]["method"]["reduction_factor"] == 4

    # Try it: class probabilities of this run beside the base model's.
    expect(page.locator("#try-it")).to_be_visible()
    expect(page.locator("#try-generation")).to_be_hidden()
    expect(page.locator("#download-merged")).to_be_hidden()  # only LoRA merges
    page.fill("#try-inputs", "good movie\n<b>bad</b> film")
    page.check("#try-compare")
    page.click("#try-submit")
    results = page.locator(".try-result")
    expect(results).to_have_count(2, timeout=60_000)
    expect(results.nth(1).locator(".try-input")).to_have_text("<b>bad</b> film")  # text, not markup
    for model in ("run", "base"):
        bars = results.nth(0).locator(f'.try-answer[data-model="{model}"] .prob-row')
        expect(bars).to_have_count(2)
        probs = [float(bars.nth(i).get_attribute("data-prob")) for i in range(2)]
        assert sum(probs) == pytest.approx(1, abs=1e-3)
    expect(results.nth(0).locator(".prob-top")).to_have_count(2)

    # A second Adapter run; then the fusion picker lists both and the count uses them.
    body = {"dataset_id": dataset["id"], "base_model": model_id, "columns": {"text": "text", "label": "label"},
            "method": {"type": "adapter", "reduction_factor": 4}, "training": TRAINING}
    second = api.post("/api/runs", json=body).json()["id"]
    assert wait_for_status(lambda: api.get(f"/api/runs/{second}").json(), ("succeeded", "failed"))["status"] == "succeeded"
    open_form(page, dataset, model_id)
    page.check("input[name=method][value=adapter_fusion]")
    picker = page.locator("#adapter_fusion-adapter_run_ids input[type=checkbox]")
    expect(page.locator(f"#adapter_fusion-adapter_run_ids input[value='{first}']")).to_be_visible()
    expect(page.locator(f"#adapter_fusion-adapter_run_ids input[value='{second}']")).to_be_visible()
    assert all(api.get(f"/api/runs/{picker.nth(i).get_attribute('value')}").json()["base_model"] == model_id
               for i in range(picker.count()))
    page.check(f"#adapter_fusion-adapter_run_ids input[value='{first}']")
    page.check(f"#adapter_fusion-adapter_run_ids input[value='{second}']")
    fused = {"type": "adapter_fusion", "adapter_run_ids": sorted([first, second], reverse=True)}
    expect(page.locator("#param-estimate")).to_have_attribute("data-trainable", str(expected_count(api, model_id, fused)))
