"""Chat data in the browser: the dataset page recognises messages / ShareGPT / Alpaca columns and
proposes a chat run; the New run form opens prefilled, trains it, and Try it and the Playground
answer multi-turn in the run's template."""
import json
import re
import uuid
from pathlib import Path

import pytest

from tests.tiny_models import make_tiny_gpt2

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

SAMPLE = Path(__file__).parents[2] / "examples" / "chat.jsonl"


@pytest.fixture(scope="module")
def gpt2_id(api, tmp_path_factory):
    res = api.post("/api/models", json={"name": f"tiny-gpt2-chat-{uuid.uuid4().hex[:6]}",
                                        "source": str(make_tiny_gpt2(tmp_path_factory.mktemp("chat-pages")))})
    assert res.status_code == 201, res.text
    return res.json()["id"]


def upload(api, name: str, data: bytes) -> dict:
    res = api.post("/api/datasets", files={"file": (name, data)})
    assert res.status_code == 201, res.text
    return res.json()


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_sharegpt_and_alpaca_are_recognised_and_plain_data_is_not(page, api):
    sharegpt = upload(api, "sharegpt.jsonl", jsonl([{"id": i, "conversations": [
        {"from": "human", "value": f"hi {i}"}, {"from": "gpt", "value": "hello"}]} for i in range(4)]))
    page.goto(f"/datasets/{sharegpt['id']}")
    expect(page.locator("#chat-shape")).to_be_visible()
    expect(page.locator("#chat-shape-text")).to_contain_text("ShareGPT")
    href = page.get_attribute("#chat-run-link", "href")
    assert "task=causal_lm" in href and "columns.messages=conversations" in href

    alpaca = upload(api, "alpaca.jsonl", jsonl([{"instruction": "Say hi", "input": "", "output": "hi"}] * 4))
    page.goto(f"/datasets/{alpaca['id']}")
    expect(page.locator("#chat-shape-text")).to_contain_text("Alpaca")
    page.click("#chat-run-link")
    page.wait_for_url(re.compile(r"/runs/new\?"))
    expect(page.locator("#col-prompt")).to_have_value("instruction")
    expect(page.locator("#col-input")).to_have_value("input")
    expect(page.locator("#col-response")).to_have_value("output")
    expect(page.locator("#col-chat_template")).to_have_value("auto")

    plain = upload(api, "plain.csv", b"text,label\ngood,pos\nbad,neg\n")
    page.goto(f"/datasets/{plain['id']}")
    expect(page.locator("#dataset-name")).to_have_text("plain.csv")
    expect(page.locator("#chat-shape")).to_be_hidden()


def test_chat_run_from_the_dataset_page_to_a_multi_turn_answer(page, api, gpt2_id):
    dataset = upload(api, f"chat-{uuid.uuid4().hex[:6]}.jsonl", SAMPLE.read_bytes())
    page.goto(f"/datasets/{dataset['id']}")
    expect(page.locator("#chat-shape-text")).to_contain_text("“messages” holds conversations")
    page.click("#chat-run-link")
    page.wait_for_url(re.compile(r"/runs/new\?"))
    expect(page.locator("#run-task")).to_have_value("causal_lm")
    expect(page.locator("input[name=lm-mode][value=chat]")).to_be_checked()
    expect(page.locator("#col-messages")).to_have_value("messages")
    expect(page.locator("#col-prompt")).to_be_hidden()
    expect(page.locator("#run-dataset")).to_have_value(str(dataset["id"]))
    page.select_option("#run-model", gpt2_id)
    page.fill("#run-name", "chat from the form")
    for field, value in {"max_steps": 3, "batch_size": 8, "eval_every": 3, "learning_rate": 0.01}.items():
        page.fill(f"#tr-{field}", str(value))
    page.click("#run-submit")
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    run_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    expect(page.locator("#run-status .badge")).to_have_text("succeeded", timeout=180_000)
    columns = api.get(f"/api/runs/{run_id}").json()["config"]["columns"]
    assert {k: v for k, v in columns.items() if v is not None} == {"messages": "messages"}

    # Try it: one conversation, the next assistant turn, then carry it on.
    expect(page.locator("#try-inputs-hint")).to_contain_text("One conversation")
    page.fill("#try-inputs", "system: You are a concise assistant.\nuser: What is 6 times 6?")
    page.fill("#try-max-new-tokens", "4")
    page.click("#try-submit")
    expect(page.locator(".try-result")).to_have_count(1, timeout=60_000)
    expect(page.locator(".try-result .try-input")).to_contain_text("user: What is 6 times 6?")
    page.click("button[data-action=continue]")
    value = page.input_value("#try-inputs")
    assert "\nassistant: " in value and value.endswith("\nuser: ")
    page.fill("#try-inputs", value + "And 7 times 7?")
    page.click("#try-submit")
    expect(page.locator(".try-result .try-input")).to_contain_text("And 7 times 7?", timeout=60_000)

    # The playground: the same conversation format, base and adapted side by side.
    page.goto(f"/playground?run={run_id}")
    expect(page.locator("#playground-inputs-hint")).to_contain_text("One conversation")
    page.fill("#playground-inputs", "user: What is the capital of Japan?\nassistant: Tokyo.\nuser: Letters?")
    page.fill("#playground-max-new-tokens", "4")
    page.click("#playground-submit")
    expect(page.locator(".try-result .try-answer")).to_have_count(2, timeout=60_000)
    page.fill("#playground-inputs", "assistant: hello")
    page.click("#playground-submit")
    expect(page.locator("#playground-error")).to_contain_text("at least one user turn")
