"""Budgets (training.max_tokens / max_seconds): the worker's whole run (`workers.tasks.fine_tune`, no
Celery or SQL) stops cleanly after the step that spends the budget — evaluated, saved, the reason in the
summary — the learning-rate schedule runs over the budget, and a resumed run spends it like an uninterrupted one."""
import pytest
import torch

from app.runs.schemas import Columns, LoraMethod, RunCreate, Training
from tests.tiny_models import make_tiny_bert, sentiment_rows
from workers.methods import get_method
from workers.model_loading import load_base_model, load_tokenizer
from workers.training.data import prepare_data
from workers.training.loop import seed_everything, train
from workers.training.reporting import MemoryReporter
from workers.training.resume import CheckpointStore, trainable_weights

EPOCH_STEPS = 10  # 150 training rows (200, a quarter held out) in batches of 16


@pytest.fixture
def tasks(peftlab_env):
    from workers import tasks  # after the test settings are in place: the Celery app reads them on import

    return tasks


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return str(make_tiny_bert(tmp_path_factory.mktemp("bert")))


def _config(**training) -> RunCreate:
    return RunCreate.model_validate({
        "dataset_id": 1, "base_model": "tiny", "task": "classification", "columns": {"text": "text", "label": "label"},
        "eval_fraction": 0.25, "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "training": {"learning_rate": 0.01, "batch_size": 16, "eval_every": 1000, "max_length": 32,
                     "checkpoint_every": 0, **training}})


def _run(tasks, bert, tmp_path, config):
    reporter = MemoryReporter()
    outcome = tasks.fine_tune(config, sentiment_rows(200, seed=3), None, bert, reporter,
                              artifact_dir=lambda kind: tmp_path / "out" / kind)
    assert outcome is not None, "a spent budget is a clean end, not a cancellation"
    return outcome[0], outcome[1], reporter


def test_a_token_budget_stops_the_run_after_the_step_that_spends_it(tasks, bert, tmp_path):
    # First find what one epoch costs in tokens, then give half of that as the budget.
    full, _, _ = _run(tasks, bert, tmp_path / "full", _config(epochs=1, max_tokens=10**9))
    assert full["stopped_by"] is None and full["steps"] == EPOCH_STEPS  # the epoch ran out first
    epoch_tokens = full["budget"]["tokens"]
    budget = epoch_tokens // 2
    summary, artifacts, reporter = _run(tasks, bert, tmp_path / "half", _config(epochs=1000, max_tokens=budget))

    assert summary["stopped_by"] == "max_tokens"
    assert summary["budget"]["max_tokens"] == budget
    assert budget <= summary["budget"]["tokens"] < budget + epoch_tokens / EPOCH_STEPS * 2  # one step past at most
    assert 0 < summary["steps"] < EPOCH_STEPS
    # Cleanly: evaluated at the last step, the adapter and predictions saved, progress complete.
    eval_steps = [step for step, _ in reporter.series("eval/accuracy")]
    assert eval_steps == [summary["steps"]] and summary["eval"]["accuracy"] is not None
    assert {"adapter", "predictions"} <= set(artifacts)
    assert reporter.progress_values[-1] == 1.0
    # The schedule ran over the budget: the rate decayed towards 0 by the end, not over 1000 epochs.
    rates = [value for _, value in reporter.series("train/lr")]
    assert rates[-1] < rates[0] * 0.5


def test_a_time_budget_stops_the_run_with_its_reason(tasks, bert, tmp_path):
    summary, artifacts, reporter = _run(tasks, bert, tmp_path, _config(epochs=1000, max_seconds=1))
    assert summary["stopped_by"] == "max_seconds"
    assert summary["budget"]["max_seconds"] == 1 and summary["budget"]["seconds"] >= 1
    assert 0 < summary["steps"] < 1000 * EPOCH_STEPS
    assert [step for step, _ in reporter.series("eval/accuracy")] == [summary["steps"]]
    assert "adapter" in artifacts


def test_runs_without_a_budget_record_none(tasks, bert, tmp_path):
    summary, _, _ = _run(tasks, bert, tmp_path, _config(max_steps=3))
    assert "stopped_by" not in summary or summary["stopped_by"] is None
    assert summary["steps"] == 3


def _lora(source: str):
    tokenizer = load_tokenizer(source)
    data = prepare_data(sentiment_rows(160), None, task="classification", columns=Columns(text="text", label="label"),
                        tokenizer=tokenizer, max_length=32, eval_fraction=0.2, seed=0)
    seed_everything(0)
    model = get_method("lora").build(load_base_model(source, "classification", data.labels, tokenizer),
                                     LoraMethod(type="lora", r=4, alpha=8, dropout=0.0), "classification")
    return tokenizer, data, model, torch.device("cpu")


def test_a_resumed_run_spends_its_token_budget_exactly_like_an_uninterrupted_one(bert, tmp_path):
    """The tokens used so far travel in the checkpoint: the resumed attempt stops at the same step, with the
    same learning rates, as a run that never stopped."""
    training = Training(learning_rate=0.01, epochs=1000, max_tokens=2500, batch_size=16, eval_every=4,
                        warmup_ratio=0.2, checkpoint_every=3, max_length=32)
    tokenizer, data, model, cpu = _lora(bert)
    whole = MemoryReporter()
    done = train(model, data, task="classification", training=training, pad_id=tokenizer.pad_token_id, reporter=whole,
                 device=cpu, checkpoints=CheckpointStore(tmp_path / "whole"))
    assert done.stopped_by == "max_tokens" and done.train_tokens >= 2500 and done.steps > 4
    expected = trainable_weights(model)

    store = CheckpointStore(tmp_path / "split")
    tokenizer, data, model, cpu = _lora(bert)
    assert train(model, data, task="classification", training=training, pad_id=tokenizer.pad_token_id,
                 reporter=MemoryReporter(stop_after_steps=4), device=cpu, checkpoints=store).stopped
    assert store.latest().step == 3
    tokenizer, data, model, cpu = _lora(bert)
    second = MemoryReporter()
    result = train(model, data, task="classification", training=training, pad_id=tokenizer.pad_token_id,
                   reporter=second, device=cpu, checkpoints=store, resume=store.latest())
    assert (result.steps, result.stopped_by, result.train_tokens) == (done.steps, "max_tokens", done.train_tokens)
    assert second.series("train/lr") == whole.series("train/lr")[3:]
    for name, value in trainable_weights(model).items():
        assert (value == expected[name]).all(), name
