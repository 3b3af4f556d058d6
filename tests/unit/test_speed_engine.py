"""The speed work in the engine: length-grouped batches (random order, less padding, same accuracy), packing
auto where exact, the tokenized-data cache, the kept base model (never another run's weights), chunked
cross-entropy, the eval batch size."""
import random

import pytest
import torch
import torch.nn.functional as F

from app.runs.schemas import Columns, FullMethod, LoraMethod, PromptMethod, Training
from tests.tiny_models import sentiment_rows
from workers.base_model_cache import BaseModelCache
from workers.methods import get_method
from workers.model_loading import load_base_model, load_tokenizer
from workers.training import token_cache
from workers.training.data import IGNORE_INDEX, Example, prepare_data
from workers.training.evaluation import CE_CHUNK, chunked_cross_entropy
from workers.training.loop import BatchStream, eval_batch_size, grouped_order, seed_everything, train
from workers.training.packing import packs_exactly, resolve_packing
from workers.training.reporting import MemoryReporter

CPU = torch.device("cpu")


def _examples(lengths):
    return [Example(input_ids=[1] * n, target=0, row=i, num_targets=1) for i, n in enumerate(lengths)]


def test_grouped_batches_are_a_shuffled_partition_with_less_padding():
    rng = random.Random(0)
    lengths = [rng.randint(2, 120) for _ in range(1000)]
    examples = _examples(lengths)

    def epoch(group: bool, epoch_index: int = 0):
        stream = BatchStream(examples, 16, seed=3, pad_id=0, epoch=epoch_index, group_by_length=group)
        return [next(stream) for _ in range(63)]  # ceil(1000 / 16)

    def padded(batches):
        return sum(b.inputs["input_ids"].numel() - b.num_tokens for b in batches)

    grouped, plain = epoch(True), epoch(False)
    assert sorted(r for b in grouped for r in b.rows) == list(range(1000))  # every example once per epoch
    assert [len(b.rows) for b in grouped][-1] == 1000 % 16  # the short batch stays last
    assert padded(grouped) < 0.2 * padded(plain)
    # Random at the batch level: not sorted by length, a different order each epoch, the same for the same seed.
    first_lengths = [max(lengths[r] for r in b.rows) for b in grouped[:-1]]
    assert first_lengths != sorted(first_lengths) and first_lengths != sorted(first_lengths, reverse=True)
    assert [b.rows for b in epoch(True, 1)] != [b.rows for b in grouped]
    assert [b.rows for b in epoch(True)] == [b.rows for b in grouped]


def test_grouping_whole_steps_gives_accumulated_micro_batches_the_same_examples():
    lengths = [random.Random(1).randint(2, 60) for _ in range(200)]
    order = torch.randperm(200, generator=torch.Generator().manual_seed(0)).tolist()
    by_step = grouped_order(order, lengths, 16, torch.Generator().manual_seed(1))
    big = BatchStream(_examples(lengths), 16, seed=0, pad_id=0, group_by_length=True)
    small = BatchStream(_examples(lengths), 8, seed=0, pad_id=0, group_by_length=True, group_steps=2)
    for _ in range(12):
        assert sorted(next(big).rows) == sorted(next(small).rows + next(small).rows)
    assert sorted(by_step) == list(range(200))


def _classification(source, rows, group: bool):
    tokenizer = load_tokenizer(source)
    data = prepare_data(rows, None, task="classification", columns=Columns(text="text", label="label"),
                        tokenizer=tokenizer, max_length=32, eval_fraction=0.2, seed=0)
    seed_everything(0)
    model = get_method("lora").build(load_base_model(source, "classification", data.labels, tokenizer),
                                     LoraMethod(type="lora", r=4, dropout=0.0), "classification")
    return train(model, data, task="classification", pad_id=tokenizer.pad_token_id, reporter=MemoryReporter(),
                 device=CPU, training=Training(learning_rate=0.02, max_steps=250, batch_size=16, eval_every=250,
                                               group_by_length=group))


def test_grouping_by_length_does_not_hurt_accuracy(sources):
    rows = sentiment_rows(400)  # 2 to 8 words: grouped batches hold one or two lengths each
    grouped, plain = _classification(sources["bert"], rows, True), _classification(sources["bert"], rows, False)
    assert plain.eval.metrics["accuracy"] > 0.85  # the task is learnt in this budget...
    assert grouped.eval.metrics["accuracy"] >= plain.eval.metrics["accuracy"] - 0.03  # ...with grouping as well
    assert grouped.eval.metrics["loss"] == pytest.approx(plain.eval.metrics["loss"], abs=0.1)


def test_eval_batch_is_twice_the_training_batch_unless_set():
    assert eval_batch_size(Training(batch_size=16)) == 32
    assert eval_batch_size(Training(batch_size=3000)) == 4096
    assert eval_batch_size(Training(batch_size=16, eval_batch_size=5)) == 5


# ---- packing auto -----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_packing_auto_packs_models_that_keep_examples_apart(sources, arch):
    model = load_base_model(sources[arch], "causal_lm")
    use_cache = model.config.use_cache
    assert packs_exactly(model)
    assert model.config.use_cache == use_cache  # the probe leaves the cache setting as it found it
    assert resolve_packing(None, "causal_lm", LoraMethod(type="lora"), model) is True
    assert resolve_packing(None, "causal_lm", PromptMethod(type="prompt"), model) is False  # virtual tokens
    assert resolve_packing(False, "causal_lm", LoraMethod(type="lora"), model) is False  # an explicit choice stands


def test_packing_auto_stays_off_where_boundaries_would_be_crossed(sources):
    model = load_base_model(sources["llama"], "causal_lm")
    forward = model.forward

    def ignores_positions(*args, position_ids=None, **kwargs):  # an architecture blind to packed boundaries
        return forward(*args, **kwargs)

    model.forward = ignores_positions
    assert not packs_exactly(model)
    assert resolve_packing(None, "causal_lm", LoraMethod(type="lora"), model) is False


def test_chunked_cross_entropy_matches_one_call():
    torch.manual_seed(0)
    n = CE_CHUNK * 2 + 17
    logits = torch.randn(n, 50, dtype=torch.bfloat16, requires_grad=True)
    targets = torch.randint(50, (n,))
    targets[::7] = IGNORE_INDEX
    chunked = chunked_cross_entropy(logits, targets)
    chunked.backward()
    grad, logits.grad = logits.grad.clone(), None
    whole = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    whole.backward()
    assert float(chunked.detach()) == pytest.approx(float(whole.detach()), rel=1e-5)
    assert torch.allclose(grad.float(), logits.grad.float(), atol=1e-3)


# ---- tokenized-data cache ---------------------------------------------------------------------------

def _prepare(tokenizer, rows, directory, **overrides):
    kwargs = dict(task="classification", columns=Columns(text="text", label="label"), tokenizer=tokenizer,
                  max_length=32, eval_fraction=0.2, seed=0, directory=directory, max_bytes=10**9) | overrides
    return token_cache.cached_prepare_data(rows, None, **kwargs)


def test_tokenized_cache_serves_the_same_examples_and_misses_on_any_change(sources, tmp_path, monkeypatch):
    tokenizer = load_tokenizer(sources["bert"])
    rows = sentiment_rows(60)
    first, hit1 = _prepare(tokenizer, rows, tmp_path)
    calls = []
    real = token_cache.prepare_data
    monkeypatch.setattr(token_cache, "prepare_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    second, hit2 = _prepare(tokenizer, rows, tmp_path)
    assert (hit1, hit2) == (False, True) and calls == []  # the second run did not tokenize
    assert second == first
    assert not list(tmp_path.glob(".*.tmp"))  # written under a temporary name, renamed into place
    changed = [dict(r) for r in rows]
    changed[0]["text"] += " good"
    for variant in (dict(rows=changed), dict(max_length=16), dict(seed=1),
                    dict(tokenizer=load_tokenizer(sources["gpt2"]))):
        r = variant.pop("rows", rows)
        data, hit = _prepare(variant.pop("tokenizer", tokenizer), r, tmp_path, **variant)
        assert not hit
    assert len(calls) == 4


def test_tokenized_cache_of_causal_examples_round_trips(sources, tmp_path):
    tokenizer = load_tokenizer(sources["llama"])
    rows = [{"prompt": "say up", "response": "down"}, {"prompt": "the sun", "response": "moon and the sun"}] * 10
    kwargs = dict(task="causal_lm", columns=Columns(prompt="prompt", response="response"))
    cold, _ = _prepare(tokenizer, rows, tmp_path, **kwargs)
    warm, hit = _prepare(tokenizer, rows, tmp_path, **kwargs)
    assert hit and warm == cold and warm.labels is None


def test_tokenized_cache_evicts_the_least_recently_used_and_survives_a_damaged_file(sources, tmp_path):
    tokenizer = load_tokenizer(sources["bert"])
    _prepare(tokenizer, sentiment_rows(60), tmp_path)
    [old] = list(tmp_path.glob("*.npz"))
    size = old.stat().st_size
    _prepare(tokenizer, sentiment_rows(60, seed=1), tmp_path, max_bytes=int(size * 1.5))
    assert not old.exists() and len(list(tmp_path.glob("*.npz"))) == 1  # the older entry went
    [entry] = list(tmp_path.glob("*.npz"))
    entry.write_bytes(b"not a zip")
    data, hit = _prepare(tokenizer, sentiment_rows(60, seed=1), tmp_path)
    assert not hit and len(data.train) == 48


# ---- the kept base model ----------------------------------------------------------------------------

@pytest.fixture
def tasks(peftlab_env):
    from workers import tasks  # after the test settings are in place: the Celery app reads them on import

    return tasks


def _load(cache, source, labels, tokenizer, seed=0):
    seed_everything(seed)
    return cache.load(source, "classification", labels, tokenizer, dtype=torch.float32, attn_implementation="sdpa",
                      seed=seed, where="cpu", max_bytes=10**9, device=CPU)


def test_a_kept_base_model_never_carries_another_runs_training(sources):
    source, cache = sources["bert"], BaseModelCache()
    tokenizer = load_tokenizer(source)
    data = prepare_data(sentiment_rows(80), None, task="classification", columns=Columns(text="text", label="label"),
                        tokenizer=tokenizer, max_length=32, eval_fraction=0.0, seed=0)
    first, kind = _load(cache, source, data.labels, tokenizer)
    after_cold = torch.get_rng_state()
    pristine = {k: v.clone() for k, v in first.state_dict().items()}
    model = get_method("full").build(first, FullMethod(type="full"), "classification")
    train(model, data, task="classification", pad_id=tokenizer.pad_token_id, reporter=MemoryReporter(), device=CPU,
          training=Training(learning_rate=0.05, max_steps=3, batch_size=16))
    assert kind == "miss" and any(not torch.equal(v, pristine[k]) for k, v in first.state_dict().items())

    second, kind = _load(cache, source, data.labels, tokenizer)
    assert kind == "hit" and second is not first
    assert all(torch.equal(v, pristine[k]) for k, v in second.state_dict().items())  # untouched by run 1
    assert torch.equal(torch.get_rng_state(), after_cold)  # the method's init draws what it drew cold
    # A new head is drawn from the seed: another seed loads afresh and gets another head.
    third, kind = _load(cache, source, data.labels, tokenizer, seed=1)
    assert kind == "miss" and not torch.equal(third.classifier.weight, pristine["classifier.weight"])
    fresh, kind = BaseModelCache().load(source, "classification", data.labels, tokenizer, dtype=torch.float32,
                                        attn_implementation="sdpa", seed=0, where="off", max_bytes=0, device=CPU)
    assert kind == "off"


def test_fine_tune_trains_the_same_with_a_kept_model(tasks, sources, tmp_path, monkeypatch):
    from app.config import get_settings
    from app.runs.schemas import RunCreate

    config = RunCreate.model_validate({
        "dataset_id": 1, "base_model": "tiny", "task": "classification",
        "columns": {"text": "text", "label": "label"}, "method": {"type": "full"},
        "training": {"max_steps": 4, "batch_size": 16, "eval_every": 4, "max_length": 32, "learning_rate": 0.01}})
    monkeypatch.setattr(tasks, "BASE_MODELS", BaseModelCache())
    summaries = []
    for i in range(2):
        summary, _ = tasks.fine_tune(config, sentiment_rows(100), None, sources["bert"], MemoryReporter(),
                                     artifact_dir=lambda kind, i=i: (tmp_path / f"{i}-{kind}").mkdir() or
                                     tmp_path / f"{i}-{kind}")
        summaries.append(summary)
    assert get_settings().base_model_cache == "cpu"
    assert [s["base_model_cache"] for s in summaries] == ["miss", "hit"]
    assert summaries[1]["tokenized_cache"] is True
    assert summaries[0]["seconds_to_first_step"] > 0 and summaries[1]["seconds_to_first_step"] > 0
    assert summaries[1]["eval"] == summaries[0]["eval"]  # the same run, whether the model was kept or not
