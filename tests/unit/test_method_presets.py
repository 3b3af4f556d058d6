"""Defaults that learn (issues #10, #14): every method at its preset learning rate, with nothing else
set, learns well above chance within 100 optimizer steps of the New run form's batch size.

The presets are rates for pretrained bases, on which a random tiny model says little. So the base here
is a small BERT (hidden 128, 2 layers; at hidden 32 the 5e-5 of full fine-tuning moves too little)
that first learns a different task at a high rate — which sentiment word a sentence holds (16 classes)
— standing in for pretraining: its features tell the words apart, but a fresh head over them scores
about chance on the sentiment (0.55–0.64 for three seeds). Each method then trains a fresh head plus what it trains for the sentiment
task (2 classes, held-out rows) with `Training()`'s defaults, max_steps 100 and its spec's preset.
A preset off by orders of magnitude (too low to move, or so high that training diverges) fails here;
bench/methods_quality.py measures the presets on the bundled MiniLM.
"""
import random

import pytest
import torch

from app.methods import all_specs, get_spec
from app.methods.registry import measured_variants
from app.runs.schemas import Columns, Training
from tests.tiny_models import NEGATIVE, NEUTRAL, POSITIVE, make_tiny_bert, sentiment_rows
from workers.methods import get_method
from workers.methods.base import BuildContext
from workers.model_loading import load_base_model, load_tokenizer
from workers.training.data import prepare_data
from workers.training.loop import seed_everything, train
from workers.training.reporting import MemoryReporter

CPU = torch.device("cpu")
STEPS = 100
LEARNT = 0.75  # two balanced classes, 200 held-out rows: chance is 0.5
COLUMNS = Columns(text="text", label="label")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared machine they spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def word_rows(n: int, seed: int) -> list[dict]:
    """The stand-in pretraining task: label = the sentiment word among neutral filler."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        word, words = rng.choice(POSITIVE + NEGATIVE), rng.sample(NEUTRAL, rng.randint(1, 6))
        words.insert(rng.randrange(len(words) + 1), word)
        rows.append({"text": " ".join(words), "label": word})
    return rows


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("preset-base")
    source = str(make_tiny_bert(root / "random", hidden=128, layers=2, heads=4))
    tokenizer = load_tokenizer(source)
    data = prepare_data(word_rows(400, seed=3), None, task="classification", columns=COLUMNS, tokenizer=tokenizer,
                        max_length=32, eval_fraction=0, seed=0)
    seed_everything(0)
    model = load_base_model(source, "classification", data.labels, tokenizer)
    train(model, data, task="classification", training=Training(learning_rate=1e-3, max_steps=150, eval_every=1000),
          pad_id=tokenizer.pad_token_id, reporter=MemoryReporter(), device=CPU)
    model.bert.save_pretrained(root / "base")  # the encoder only: every run below gets a fresh head
    tokenizer.save_pretrained(root / "base")
    return str(root / "base")


def train_at(source: str, settings: dict, learning_rate: float | None = None, context=None):
    """(held-out accuracy, model, method) after STEPS steps, the form's defaults otherwise."""
    tokenizer = load_tokenizer(source)
    data = prepare_data(sentiment_rows(400, seed=1), sentiment_rows(200, seed=2), task="classification",
                        columns=COLUMNS, tokenizer=tokenizer, max_length=32, eval_fraction=0, seed=0)
    spec = get_spec(settings["type"])
    seed_everything(0)
    method = get_method(spec.name)
    model = method.build(load_base_model(source, "classification", data.labels, tokenizer),
                         spec.config.model_validate(settings), "classification",
                         context or BuildContext(source=source, tokenizer=tokenizer))
    training = Training(learning_rate=learning_rate or spec.learning_rate, max_steps=STEPS, eval_every=STEPS)
    result = train(model, data, task="classification", training=training, pad_id=tokenizer.pad_token_id,
                   reporter=MemoryReporter(), device=CPU)
    assert result.steps == STEPS
    return result.eval.metrics["accuracy"], model, method


def test_every_registered_method_is_measured():
    variants = measured_variants()
    assert {settings["type"] for settings in variants.values()} == {spec.name for spec in all_specs()}
    assert {"lora_dora", "lora_rslora", "lora_pissa", "adapter_houlsby", "adapter_pfeiffer"} <= variants.keys()


@pytest.mark.slow
def test_a_rate_far_below_the_preset_does_not_pass(pretrained):
    """The check can fail: LoRA at 1e-7 moves nothing in 100 steps."""
    accuracy, _, _ = train_at(pretrained, {"type": "lora"}, learning_rate=1e-7)
    assert accuracy < LEARNT


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in measured_variants() if name != "adapter_fusion"])
def test_preset_learns_within_100_steps(pretrained, name):
    settings = measured_variants()[name]
    accuracy, _, _ = train_at(pretrained, settings)
    assert accuracy >= LEARNT, f"{name} at its preset {get_spec(settings['type']).learning_rate:g}: {accuracy:.2f}"


@pytest.mark.slow
def test_adapter_fusion_preset_learns_within_100_steps(pretrained, tmp_path):
    """Over two Houlsby adapters trained first at their preset (as the form requires trained adapter runs)."""
    dirs = {}
    for run_id, factor in ((1, 16), (2, 32)):
        _, model, method = train_at(pretrained, {"type": "adapter", "variant": "houlsby", "reduction_factor": factor})
        dirs[run_id] = tmp_path / f"adapter-{run_id}"
        method.save(model, dirs[run_id])
    tokenizer = load_tokenizer(pretrained)
    accuracy, _, _ = train_at(pretrained, {"type": "adapter_fusion", "adapter_run_ids": [1, 2]},
                              context=BuildContext(source=pretrained, tokenizer=tokenizer, adapter_dir=dirs.__getitem__))
    assert accuracy >= LEARNT
