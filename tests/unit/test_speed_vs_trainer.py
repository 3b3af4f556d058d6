"""The engine trains like HF Trainer + peft: 20 steps on the same weights, data order and settings give the same
losses; and length grouping or packing on versus off reach the same eval loss."""
import random

import pytest
import torch

pytest.importorskip("accelerate")  # transformers.Trainer needs it (the bench extra)

from peft import LoraConfig, TaskType, get_peft_model  # noqa: E402
from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, PrinterCallback,  # noqa: E402
                          Trainer, TrainingArguments)

from app.runs.schemas import Columns, LoraMethod, Training  # noqa: E402
from tests.tiny_models import NEUTRAL, opposite_rows, sentiment_rows  # noqa: E402
from workers.methods import get_method  # noqa: E402
from workers.model_loading import load_base_model, load_tokenizer  # noqa: E402
from workers.training.data import prepare_data  # noqa: E402
from workers.training.loop import seed_everything, train  # noqa: E402
from workers.training.reporting import MemoryReporter  # noqa: E402

CPU = torch.device("cpu")
STEPS, BATCH, LR, SEED = 20, 8, 0.05, 0


class _EngineOrder(torch.utils.data.Sampler):
    """The engine's ungrouped order: a permutation seeded with seed + epoch, a fresh one each epoch."""

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def __len__(self):
        return self.n

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(SEED + self.epoch)).tolist()
        self.epoch += 1
        return iter(order)


class _OrderedTrainer(Trainer):
    def _get_train_sampler(self, train_dataset=None):
        return _EngineOrder(len(self.train_dataset))


def test_twenty_steps_match_hf_trainer_and_peft(sources, tmp_path):
    source = sources["bert"]
    tokenizer = load_tokenizer(source)
    rows = sentiment_rows(120)
    data = prepare_data(rows, None, task="classification", columns=Columns(text="text", label="label"),
                        tokenizer=tokenizer, max_length=32, eval_fraction=0.0, seed=SEED)
    seed_everything(SEED)
    ours = get_method("lora").build(load_base_model(source, "classification", data.labels, tokenizer),
                                    LoraMethod(type="lora", r=4, alpha=8, dropout=0.0), "classification")
    initial = {k: v.clone() for k, v in ours.state_dict().items()}
    reporter = MemoryReporter()
    train(ours, data, task="classification", pad_id=tokenizer.pad_token_id, reporter=reporter, device=CPU,
          training=Training(learning_rate=LR, max_steps=STEPS, batch_size=BATCH, eval_every=10**6, seed=SEED,
                            group_by_length=False, packing=False))
    our_losses = [v for _, v in reporter.series("train/loss")]

    hf = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(data.labels))
    hf = get_peft_model(hf, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, lora_dropout=0.0,
                                       target_modules=["query", "value"]))
    assert hf.state_dict().keys() == initial.keys()
    hf.load_state_dict(initial)  # the same starting weights (the new head and LoRA A are random draws)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=BATCH,
                             learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                             max_grad_norm=1.0, seed=SEED, use_cpu=True, eval_strategy="no", save_strategy="no",
                             report_to=[], logging_steps=1, disable_tqdm=True, label_names=["labels"])
    trainer = _OrderedTrainer(model=hf, args=args, data_collator=DataCollatorWithPadding(tokenizer),
                              train_dataset=[{"input_ids": e.input_ids, "labels": e.target} for e in data.train])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    hf_losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    assert len(our_losses) == len(hf_losses) == STEPS
    assert our_losses == pytest.approx(hf_losses, rel=2e-3, abs=1e-4)
    assert sum(our_losses[-5:]) < sum(our_losses[:5])  # it learnt something, so equal curves mean something


def _causal_eval_loss(source, packing: bool, group: bool):
    tokenizer = load_tokenizer(source)
    rng = random.Random(0)
    rows = opposite_rows(160)
    for row in rows:  # varied lengths, so packing and grouping change the batches' shapes
        row["prompt"] = " ".join(rng.choices(NEUTRAL, k=rng.randint(0, 12))) + " " + row["prompt"]
    data = prepare_data(rows, None, task="causal_lm", columns=Columns(prompt="prompt", response="response"),
                        tokenizer=tokenizer, max_length=48, eval_fraction=0.2, seed=0)
    seed_everything(0)
    model = get_method("lora").build(load_base_model(source, "causal_lm", tokenizer=tokenizer),
                                     LoraMethod(type="lora", r=8, alpha=16, dropout=0.0), "causal_lm")
    result = train(model, data, task="causal_lm", pad_id=tokenizer.pad_token_id, reporter=MemoryReporter(),
                   device=CPU, training=Training(learning_rate=3e-2, max_steps=40, batch_size=16, eval_every=40,
                                                 max_length=48, packing=packing, group_by_length=group))
    return result.eval.metrics["loss"]


def test_packing_and_grouping_reach_the_same_eval_loss(sources):
    plain = _causal_eval_loss(sources["llama"], packing=False, group=False)
    packed = _causal_eval_loss(sources["llama"], packing=True, group=False)
    grouped = _causal_eval_loss(sources["llama"], packing=False, group=True)
    # Packing keeps every batch's examples and targets: the same training up to float rounding.
    assert packed == pytest.approx(plain, rel=1e-3)
    # Grouping changes which examples share a step: a different path to about the same place.
    assert grouped == pytest.approx(plain, rel=0.1)
