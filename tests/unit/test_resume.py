"""Resumable checkpoints: the optimizer flattens and comes back exactly, a failed or killed write
leaves the previous checkpoint as it was, pruning keeps the last and the best, a resumed run ends
where an uninterrupted one does, and early stopping keeps the best step."""
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from app.runs.schemas import Columns, LoraMethod, Training
from tests.tiny_models import sentiment_rows
from workers.methods import get_method
from workers.model_loading import load_base_model, load_tokenizer
from workers.training.data import prepare_data
from workers.training.loop import seed_everything, train
from workers.training.reporting import MemoryReporter
from workers.training.resume import (STATE_FILE, CheckpointStore, LoopState, flatten_optimizer, trainable_weights,
                                     unflatten_optimizer)

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


def small_model_and_optimizer(steps: int = 3) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
    optimizer = torch.optim.AdamW([{"params": [model[0].weight, model[2].weight], "weight_decay": 0.1},
                                   {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0}], lr=1e-2)
    for _ in range(steps):
        model(torch.randn(8, 16)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_optimizer_state_flattens_to_safetensors_and_back_exactly(tmp_path):
    model, optimizer = small_model_and_optimizer()
    tensors, rest = flatten_optimizer(optimizer.state_dict())
    save_file(tensors, str(tmp_path / "opt.safetensors"))
    restored = unflatten_optimizer(load_file(str(tmp_path / "opt.safetensors")), rest)

    original = optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]  # betas are tuples again
    assert restored["state"].keys() == original["state"].keys()
    for index, entries in original["state"].items():
        assert restored["state"][index].keys() == entries.keys()
        for key, value in entries.items():
            assert torch.equal(restored["state"][index][key], value) and restored["state"][index][key].dtype == value.dtype

    # A fresh optimizer loaded with it takes exactly the same next step as the original.
    twin, twin_optimizer = small_model_and_optimizer(steps=0)
    twin.load_state_dict(model.state_dict())
    twin_optimizer.load_state_dict(restored)
    batch = torch.randn(8, 16)
    for m, opt in ((model, optimizer), (twin, twin_optimizer)):
        m(batch).pow(2).mean().backward()
        opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def save_step(store: CheckpointStore, model, optimizer, step: int, best_step: int | None = None) -> bool:
    return store.save(LoopState(step=step, best_step=best_step), model, optimizer, schedule={})


def test_pruning_keeps_the_last_and_the_best(tmp_path):
    model, optimizer = small_model_and_optimizer()
    store = CheckpointStore(tmp_path)
    for step in range(1, 6):
        assert save_step(store, model, optimizer, step, best_step=2 if step >= 2 else 1)
    assert [c.step for c in store.all()] == [2, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002", "step-00000005"]
    assert save_step(store, model, optimizer, 6, best_step=6)
    assert [c.step for c in store.all()] == [6]


def test_a_worker_that_may_not_write_writes_nothing(tmp_path):
    """may_write is the worker's check that it still holds the run (and that its points are in)."""
    model, optimizer = small_model_and_optimizer()
    saved = []
    allowed = CheckpointStore(tmp_path, on_saved=saved.append)
    assert save_step(allowed, model, optimizer, 1) and saved == [tmp_path]
    refused = CheckpointStore(tmp_path, may_write=lambda: False, on_saved=saved.append)
    assert save_step(refused, model, optimizer, 2) is False
    failing = CheckpointStore(tmp_path, may_write=lambda: 1 / 0, on_saved=saved.append)  # e.g. the database is down
    assert save_step(failing, model, optimizer, 3) is False
    assert [c.step for c in allowed.all()] == [1] and saved == [tmp_path]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    model, optimizer = small_model_and_optimizer()
    store = CheckpointStore(tmp_path)
    assert save_step(store, model, optimizer, 1)
    weights_at_1 = trainable_weights(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    # A real short write: the file size limit makes the kernel refuse the weights file (EFBIG).
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
    try:
        assert save_step(store, model, optimizer, 2) is False
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert [c.step for c in store.all()] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000001"]  # no half-written leftovers
    store.restore(store.latest(), model, small_model_and_optimizer(steps=0)[1])
    for name, value in trainable_weights(model).items():
        assert torch.equal(value, weights_at_1[name])


def test_a_process_killed_mid_write_leaves_the_previous_checkpoint(tmp_path):
    """SIGXFSZ (file too large), left at its default, kills the writer in the middle of the weights file."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.unit.test_resume import small_model_and_optimizer, save_step
        from workers.training.resume import CheckpointStore
        model, optimizer = small_model_and_optimizer()
        store = CheckpointStore(__import__("pathlib").Path({str(tmp_path)!r}))
        assert save_step(store, model, optimizer, 1)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        save_step(store, model, optimizer, 2)
        print("survived")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -25 and "survived" not in proc.stdout, proc.stderr  # SIGXFSZ
    assert any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())  # the interrupted write
    store = CheckpointStore(tmp_path)
    assert [c.step for c in store.all()] == [1] and (store.latest().path / STATE_FILE).is_file()
    model, optimizer = small_model_and_optimizer()
    assert save_step(store, model, optimizer, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000003"]  # the leftover is pruned


def lora_setup(source: str):
    tokenizer = load_tokenizer(source)
    data = prepare_data(sentiment_rows(160), None, task="classification", columns=Columns(text="text", label="label"),
                        tokenizer=tokenizer, max_length=32, eval_fraction=0.2, seed=0)
    seed_everything(0)
    model = get_method("lora").build(load_base_model(source, "classification", data.labels, tokenizer),
                                     LoraMethod(type="lora", r=4, alpha=8, dropout=0.3), "classification")
    return tokenizer, data, model


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(sources, tmp_path):
    """Dropout (LoRA's, p = 0.3), the data order across an epoch boundary, warmup/decay and AdamW's
    moments must all come back from the checkpoint for the weights and the curve to match."""
    training = Training(learning_rate=0.01, max_steps=20, batch_size=16, eval_every=5, warmup_ratio=0.2,
                        checkpoint_every=3, seed=3)  # 8 batches an epoch: step 12 is in the second epoch
    tokenizer, data, model = lora_setup(sources["bert"])
    whole = MemoryReporter()
    train(model, data, task="classification", training=training, pad_id=tokenizer.pad_token_id, reporter=whole,
          device=CPU, checkpoints=CheckpointStore(tmp_path / "whole"))
    expected = trainable_weights(model)

    store = CheckpointStore(tmp_path / "split")
    tokenizer, data, model = lora_setup(sources["bert"])
    first = MemoryReporter(stop_after_steps=11)
    assert train(model, data, task="classification", training=training, pad_id=tokenizer.pad_token_id,
                 reporter=first, device=CPU, checkpoints=store).stopped
    assert store.latest().step == 9  # steps 10 and 11 are lost with the "crash"
    tokenizer, data, model = lora_setup(sources["bert"])  # a new process: fresh weights and RNG
    second = MemoryReporter()
    result = train(model, data, task="classification", training=training, pad_id=tokenizer.pad_token_id,
                   reporter=second, device=CPU, checkpoints=store, resume=store.latest())
    assert result.steps == 20
    for name, value in trainable_weights(model).items():
        assert torch.equal(value, expected[name]), name
    curve = [p for p in first.series("train/loss") if p[0] <= 9] + second.series("train/loss")
    assert curve == whole.series("train/loss")
    assert second.series("train/lr") == whole.series("train/lr")[9:]
    assert [s for s, _ in second.series("eval/loss")] == [10, 15, 20]

    # A retry after the final write failed resumes from the final checkpoint: nothing left to train,
    # the same last evaluation for the summary, no point reported twice.
    assert store.latest().step == 20
    tokenizer, data, model = lora_setup(sources["bert"])
    third = MemoryReporter()
    again = train(model, data, task="classification", training=training, pad_id=tokenizer.pad_token_id,
                  reporter=third, device=CPU, checkpoints=store, resume=store.latest())
    assert again.steps == 20 and third.points == []
    assert again.eval.metrics == result.eval.metrics


def test_early_stopping_keeps_the_best_step(sources, tmp_path):
    """A learning rate too small to change any prediction: accuracy never improves after the first
    evaluation, so patience 2 stops the run at the third."""
    training = Training(learning_rate=1e-9, max_steps=100, batch_size=16, eval_every=4, checkpoint_every=0,
                        metric_for_best="eval/accuracy", early_stopping_patience=2)
    tokenizer, data, model = lora_setup(sources["bert"])
    store = CheckpointStore(tmp_path)
    result = train(model, data, task="classification", training=training, pad_id=tokenizer.pad_token_id,
                   reporter=MemoryReporter(), device=CPU, checkpoints=store)
    assert result.stopped_early and not result.stopped
    assert result.steps == 12 and result.best_step == 4
    assert [c.step for c in store.all()] == [4]  # checkpoint_every = 0: only the best is kept


def test_patience_needs_a_metric_that_fits_the_task():
    with pytest.raises(ValueError, match="early_stopping_patience needs training.metric_for_best"):
        Training(early_stopping_patience=3)
    assert Training(metric_for_best="eval/loss", early_stopping_patience=3).early_stopping_patience == 3


def test_checkpoint_files_are_safetensors_and_json(tmp_path):
    model, optimizer = small_model_and_optimizer()
    store = CheckpointStore(tmp_path)
    save_step(store, model, optimizer, 7)
    names = sorted(os.listdir(store.latest().path))
    assert names == ["optimizer.safetensors", "rng.safetensors", "state.json", "weights.safetensors"]
