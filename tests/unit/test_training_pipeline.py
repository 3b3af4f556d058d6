"""The worker's whole run without Celery or SQL (`workers.tasks.fine_tune`), and the small pieces
it reports with: macro-F1 and the one-line failure reason."""
import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from app.runs.schemas import RunCreate
from tests.tiny_models import make_tiny_bert, make_tiny_gpt2, opposite_rows, sentiment_rows
from workers.training.checkpoints import load_trained
from workers.training.evaluation import macro_f1
from workers.training.reporting import MemoryReporter


@pytest.fixture
def tasks(peftlab_env):
    # Imported after the test settings are in place: the Celery app reads them on import.
    from workers import tasks

    return tasks


def test_macro_f1_by_hand():
    truth, pred = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 0])
    # class 0: tp 1 fp 1 fn 1 → 0.5; class 1: tp 2 fp 1 fn 0 → 0.8; class 2: tp 0 fn 1 → 0
    assert macro_f1(truth, pred, num_classes=4) == pytest.approx((0.5 + 0.8 + 0.0) / 3)  # class 3 never occurs
    assert macro_f1(truth, truth, num_classes=3) == 1.0


def _config(**overrides) -> RunCreate:
    body = {"dataset_id": 1, "base_model": "tiny", "task": "classification",
            "columns": {"text": "text", "label": "label"}, "eval_fraction": 0.25,
            "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
            "training": {"learning_rate": 0.02, "epochs": 3, "batch_size": 16, "eval_every": 10, "max_length": 32}}
    body.update(overrides)
    return RunCreate.model_validate(body)


def test_fine_tune_classification_writes_a_self_describing_adapter(tasks, tmp_path):
    source = str(make_tiny_bert(tmp_path / "bert"))
    rows = sentiment_rows(200, seed=3)
    outcome = tasks.fine_tune(_config(), rows, None, source, MemoryReporter(),
                              artifact_dir=lambda kind: (tmp_path / "out" / kind))
    summary, artifacts = outcome
    # merged: LoRA folded into the base; checkpoints: the final one, so a failed final write costs no steps
    assert set(artifacts) == {"adapter", "predictions", "merged", "checkpoints"}
    assert summary["trainable_params"] == 2 * 2 * 2 * 32 * 8 + 32 * 2 + 2
    assert summary["total_params"] > summary["trainable_params"] and summary["adapter_bytes"] > 0
    assert summary["train_samples_per_s"] > 0 and summary["train_tokens_per_s"] > summary["train_samples_per_s"]
    assert summary["peak_memory_bytes"] > 0 and summary["steps"] == 30  # 150 rows → 10 batches × 3 epochs
    assert 0 <= summary["eval"]["accuracy"] <= 1 and summary["eval"]["perplexity"] is None
    json.dumps(summary)  # stored as JSON in the runs table

    adapter = artifacts["adapter"]
    meta = json.loads((adapter / "peftlab.json").read_text())
    assert meta["labels"] == ["neg", "pos"] and meta["task"] == "classification" and meta["base_model"] == "tiny"
    assert meta["method"]["type"] == "lora" and meta["columns"] == {"text": "text", "label": "label"}
    predictions = [json.loads(line) for line in artifacts["predictions"].read_text().splitlines()]
    assert len(predictions) == 50
    for p in predictions:
        assert p["label"] == rows[p["row"]]["label"]  # row indices point into the uploaded file
        assert p["prediction"] in meta["labels"] and sum(p["probs"]) == pytest.approx(1.0, abs=1e-5)
    accuracy = sum(p["label"] == p["prediction"] for p in predictions) / len(predictions)
    assert accuracy == pytest.approx(summary["eval"]["accuracy"])

    # The project's own loader (the playground's predictions) agrees with the saved predictions.
    model, tokenizer, metadata = load_trained(adapter, source)
    assert metadata["labels"] == meta["labels"]
    with torch.no_grad():
        for p in predictions[:5]:
            probs = model(**tokenizer(rows[p["row"]]["text"], return_tensors="pt")).logits.softmax(-1)[0]
            assert probs.tolist() == pytest.approx(p["probs"], abs=1e-5)

    base = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(adapter))  # the tokenizer travels with the adapter
    first = predictions[0]
    with torch.no_grad():
        probs = model(**tokenizer(rows[first["row"]]["text"], return_tensors="pt")).logits.softmax(-1)[0]
    assert probs.tolist() == pytest.approx(first["probs"], abs=1e-5)


def test_fine_tune_causal_lm_with_a_separate_eval_dataset(tasks, tmp_path):
    source = str(make_tiny_gpt2(tmp_path / "gpt2"))
    config = _config(task="causal_lm", columns={"prompt": "prompt", "response": "response"}, eval_dataset_id=2,
                     training={"learning_rate": 0.03, "max_steps": 12, "batch_size": 8, "eval_every": 6})
    summary, artifacts = tasks.fine_tune(config, opposite_rows(40), opposite_rows(10, seed=1), source,
                                         MemoryReporter(), artifact_dir=lambda kind: (tmp_path / "out" / kind))
    assert set(artifacts) == {"adapter", "merged", "checkpoints"}  # no predictions: they are classification only
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in artifacts["adapter"].iterdir()}
    assert summary["eval"]["perplexity"] > 1 and summary["eval"]["accuracy"] is None
    assert summary["eval_examples"] == 10 and summary["train_examples"] == 40


def test_fine_tune_returns_none_when_stopped(tasks, tmp_path):
    source = str(make_tiny_bert(tmp_path / "bert"))
    made = []
    outcome = tasks.fine_tune(_config(), sentiment_rows(100), None, source, MemoryReporter(stop_after_steps=2),
                              artifact_dir=lambda kind: made.append(kind) or tmp_path / kind)
    assert outcome is None and made == []


@pytest.mark.parametrize("overrides, reason", [
    ({"columns": {"text": "sentence", "label": "label"}}, "column 'sentence' is not in the training dataset"),
    ({"method": {"type": "lora", "target_modules": ["q_proj"]}}, "q_proj not found in the model"),
    ({"columns": {"text": "text", "label": "text"}}, "looks like a text column"),
    # The server's checks (app/runs/checks.py), made again by the worker with the same function:
    ({"method": {"type": "prompt", "num_virtual_tokens": 125}}, "125 virtual tokens leave no room for text"),
    ({"task": "causal_lm", "columns": {"text": "text"}}, "needs a decoder"),
    ({"eval_fraction": 0.001}, "leaves no eval rows"),
])
def test_bad_configs_fail_with_a_readable_one_line_reason(tasks, tmp_path, overrides, reason):
    source = str(make_tiny_bert(tmp_path / "bert"))
    with pytest.raises(Exception) as info:
        tasks.fine_tune(_config(**overrides), sentiment_rows(100), None, source, MemoryReporter(),
                        artifact_dir=lambda kind: tmp_path / kind)
    message = tasks.failure_reason(info.value)
    assert reason in message and "\n" not in message


def test_failure_reason_names_unexpected_errors(tasks):
    failure_reason = tasks.failure_reason
    assert failure_reason(RuntimeError("boom\nmore detail")) == "RuntimeError: boom"
    assert failure_reason(ValueError("a clear reason")) == "a clear reason"
    assert failure_reason(KeyError()) == "KeyError"


def test_fine_tune_ships_the_best_step_and_keeps_the_last(tasks, tmp_path):
    """Accuracy never improves at a learning rate of 1e-9: the best step is the first evaluation's,
    patience 2 stops the run two evaluations later, and both weights are saved."""
    from safetensors.torch import load_file

    source = str(make_tiny_bert(tmp_path / "bert"))
    config = _config(training={"learning_rate": 1e-9, "max_steps": 100, "batch_size": 16, "eval_every": 4,
                               "max_length": 32, "metric_for_best": "eval/accuracy", "early_stopping_patience": 2})
    summary, artifacts = tasks.fine_tune(config, sentiment_rows(200, seed=3), None, source, MemoryReporter(),
                                         artifact_dir=lambda kind: (tmp_path / "out" / kind))
    assert (summary["best_step"], summary["steps"], summary["stopped_early"]) == (4, 12, True)
    assert {"adapter", "adapter_last", "merged", "predictions", "checkpoints"} <= set(artifacts)
    best = load_file(artifacts["adapter"] / "adapter_model.safetensors")
    last = load_file(artifacts["adapter_last"] / "adapter_model.safetensors")
    assert best.keys() == last.keys() and any(not torch.equal(best[k], last[k]) for k in best)
    checkpoint = load_file(artifacts["checkpoints"] / "step-00000004" / "weights.safetensors")
    head = next(k for k in checkpoint if k.endswith("classifier.modules_to_save.default.weight"))
    assert torch.equal(best[next(k for k in best if k.endswith("classifier.weight"))], checkpoint[head])
    assert sorted(p.name for p in artifacts["checkpoints"].iterdir()) == ["step-00000004", "step-00000012"]
