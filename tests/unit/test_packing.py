"""training.packing: a packed batch gives every example the loss it gets alone (attention never crosses
an example, positions restart), packed training learns, and packing is refused where it cannot work."""
import random

import pytest
import torch
import torch.nn.functional as F

from app.runs.checks import training_problems
from app.runs.schemas import Columns, LoraMethod, RunCreate, Training
from tests.tiny_models import NEUTRAL, opposite_rows
from workers.methods import get_method
from workers.model_loading import load_base_model, load_tokenizer
from workers.training.data import IGNORE_INDEX, collate, prepare_data
from workers.training.evaluation import batch_loss
from workers.training.loop import seed_everything, train
from workers.training.packing import collate_packed, pack, prepare_for_packing
from workers.training.reporting import MemoryReporter

CPU = torch.device("cpu")


def test_first_fit_decreasing_layout():
    lengths = [9, 3, 7, 2, 5, 1, 12]
    rows = pack(lengths, capacity=10)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows if len(row) > 1)
    assert rows == [[6], [0, 5], [2, 1], [4, 3]]  # 12 alone (longer than a row), 9+1, 7+3, 5+2


def _text_examples(tokenizer, n: int = 12):
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choices(NEUTRAL, k=rng.randint(1, 14)))} for _ in range(n)]
    return prepare_data(rows, None, task="causal_lm", columns=Columns(text="text"), tokenizer=tokenizer,
                        max_length=32, eval_fraction=0.0, seed=0).train


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_packed_batch_gives_each_example_its_own_loss(sources, arch):
    tokenizer = load_tokenizer(sources[arch])
    examples = _text_examples(tokenizer)
    seed_everything(0)
    model = load_base_model(sources[arch], "causal_lm", tokenizer=tokenizer).eval()
    prepare_for_packing(model)
    capacity = 40
    batch = collate_packed(examples, tokenizer.pad_token_id, capacity)
    assert "attention_mask" not in batch.inputs
    assert batch.inputs["input_ids"].shape[0] < len(examples)  # several examples share rows
    with torch.no_grad():
        logits = model(**batch.inputs).logits
        per_token = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch.labels[:, 1:], ignore_index=IGNORE_INDEX,
                                    reduction="none")
        packed_total, _ = batch_loss(model, batch, "causal_lm")
        alone = [batch_loss(model, collate([e], tokenizer.pad_token_id), "causal_lm")[0] for e in examples]
    checked = 0
    for r, row in enumerate(pack([len(e.input_ids) for e in examples], capacity)):
        offset = 0
        for i in row:
            n = len(examples[i].input_ids)
            packed_loss = per_token[r, offset:offset + n - 1].sum()  # the predictions of tokens 1..n-1
            assert packed_loss == pytest.approx(float(alone[i]), abs=1e-4), (r, i)
            offset += n
            checked += 1
    assert checked == len(examples)
    assert float(packed_total) == pytest.approx(float(sum(alone)), abs=1e-3)
    assert batch.num_targets == sum(e.num_targets for e in examples)


def test_packed_training_learns(sources):
    tokenizer = load_tokenizer(sources["llama"])
    data = prepare_data(opposite_rows(200), None, task="causal_lm", columns=Columns(prompt="prompt", response="response"),
                        tokenizer=tokenizer, max_length=32, eval_fraction=0.1, seed=0)
    seed_everything(0)
    model = get_method("lora").build(load_base_model(sources["llama"], "causal_lm", tokenizer=tokenizer),
                                     LoraMethod(type="lora", r=8, alpha=16, dropout=0.0), "causal_lm")
    reporter = MemoryReporter()
    result = train(model, data, task="causal_lm", pad_id=tokenizer.pad_token_id, reporter=reporter, device=CPU,
                   training=Training(learning_rate=3e-2, max_steps=40, batch_size=16, eval_every=40, max_length=64,
                                     packing=True))
    losses = [v for _, v in reporter.series("train/loss")]
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    assert result.eval.metrics["loss"] < losses[0]


def _config(method: dict, task: str, **training) -> RunCreate:
    columns = {"text": "text"} if task == "causal_lm" else {"text": "text", "label": "label"}
    return RunCreate.model_validate({"dataset_id": 1, "base_model": "tiny", "task": task, "columns": columns,
                                     "method": method, "training": training})


def test_packing_is_refused_where_it_cannot_work():
    assert training_problems(_config({"type": "lora"}, "causal_lm", packing=True)) == []
    [problem] = training_problems(_config({"type": "lora"}, "classification", packing=True))
    assert problem.loc == ("training", "packing") and "causal_lm" in problem.msg
    [problem] = training_problems(_config({"type": "prompt"}, "causal_lm", packing=True))
    assert problem.loc == ("training", "packing") and "virtual tokens" in problem.msg


def test_a_packed_run_ships_a_merged_model_that_generates_with_a_cache(peftlab_env, tmp_path):
    """Packing and checkpointing turn the KV cache off for training only: the merged model's config keeps it."""
    import json

    from tests.tiny_models import make_tiny_llama
    from workers.tasks import fine_tune  # after the test settings: the Celery app reads them on import

    config = RunCreate.model_validate({
        "dataset_id": 1, "base_model": "tiny", "task": "causal_lm", "columns": {"text": "text"}, "eval_fraction": 0.2,
        "method": {"type": "lora", "r": 4, "dropout": 0.0},
        "training": {"max_steps": 2, "batch_size": 8, "packing": True, "gradient_checkpointing": True}})
    _, artifacts = fine_tune(config, opposite_rows(20), None, str(make_tiny_llama(tmp_path / "llama")),
                             MemoryReporter(), artifact_dir=lambda kind: tmp_path / "out" / kind)
    assert json.loads((artifacts["merged"] / "config.json").read_text())["use_cache"] is True
