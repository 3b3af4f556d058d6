"""What a downloaded run says about itself: the adapter zip's README.md is a real model card, its
adapter_config.json names a base model another machine can resolve, the merged model has its tokenizer,
and both load the way the card says."""
import io
import json
import zipfile

import pytest

from tests.conftest import wait_for_status
from tests.integration.test_end_to_end import sentiment_csv

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lora_run(app, admin_account, worker_process, tiny_bert_source):
    from fastapi.testclient import TestClient

    with TestClient(app, headers=admin_account.headers) as c:
        model = c.post("/api/models", json={"name": "tiny bert cards", "source": tiny_bert_source}).json()
        ds = c.post("/api/datasets", files={"file": ("reviews.csv", sentiment_csv(80))}).json()
        body = {"name": "card lora", "dataset_id": ds["id"], "base_model": model["id"], "task": "classification",
                "eval_fraction": 0.25, "columns": {"text": "review", "label": "sentiment"},
                "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
                "training": {"learning_rate": 0.01, "batch_size": 16, "max_steps": 6, "eval_every": 3, "seed": 1}}
        run = c.post("/api/runs", json=body).json()
        run = wait_for_status(lambda: c.get(f"/api/runs/{run['id']}").json(), ("succeeded", "failed"))
        assert run["status"] == "succeeded", run
        yield {"run": run, "model": model, "dataset": ds}


def _unzip(client, url: str, into) -> None:
    res = client.get(url)
    assert res.status_code == 200, res.text
    zipfile.ZipFile(io.BytesIO(res.content)).extractall(into)


def test_the_adapter_zip_has_a_model_card_and_a_portable_base_model(client, lora_run, tmp_path, tiny_bert_source):
    run, model = lora_run["run"], lora_run["model"]
    folder = tmp_path / f"peftlab-run-{run['id']}-adapter"
    _unzip(client, f"/api/runs/{run['id']}/adapter", folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == model["id"]  # the registered name, not a server path
    card = (folder / "README.md").read_text()
    assert "More Information Needed" not in card
    for needle in (f"base_model: {model['id']}", "library_name: peft", "LoRA: r 4, alpha 8",
                   "reviews.csv: 60 training and 20 evaluation examples", "| accuracy |",
                   "AutoModelForSequenceClassification", "num_labels=2", "PeftModel.from_pretrained(base",
                   f'peftlab.load("peftlab-run-{run["id"]}-adapter", base="{model["id"]}")', "learning_rate 0.01"):
        assert needle in card, (needle, card)
    accuracy = run["summary"]["eval"]["accuracy"]
    assert f"| accuracy | {accuracy:.4f} |" in card

    # Load it as the card says, with the base model's local copy, and with peftlab.load.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import peftlab

    labels = json.loads((folder / "peftlab.json").read_text())["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_source, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)})
    peft_model = PeftModel.from_pretrained(base, folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    loaded, tok, meta = peftlab.load(folder, base=tiny_bert_source)
    inputs = tokenizer(["good great film"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(peft_model(**inputs).logits, loaded(**tok(["good great film"], return_tensors="pt")).logits,
                              atol=1e-5)
    assert peftlab.predict(loaded, tok, meta, ["good great film"])[0]["label"] in labels


def test_the_merged_zip_has_the_tokenizer_and_a_card(client, lora_run, tmp_path):
    run = lora_run["run"]
    folder = tmp_path / "merged"
    _unzip(client, f"/api/runs/{run['id']}/merged", folder)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model(**tokenizer(["good film"], return_tensors="pt")).logits.shape == (1, 2)
    card = (folder / "README.md").read_text()
    assert "merged into the base model's weights" in card and "AutoTokenizer.from_pretrained" in card
