"""Prefix-tuning, P-tuning and Prompt-tuning on tiny BERT / GPT-2 / Llama: trainable counts match
DESIGN.md's formulas, training touches only the method's parameters and the head, what is saved
loads back to the same logits, the methods learn, and the outputs line up with the inputs (BERT's
prefixes really reach attention; virtual tokens never leak into logits or pooling)."""
import json
from functools import cache

import pytest
import torch
from peft import PeftModel, PrefixTuningConfig, TaskType, get_peft_model

from app.runs.schemas import Columns, PrefixMethod, PromptMethod, PTuningMethod, RunCreate, Training
from tests.tiny_models import make_tiny_bert, make_tiny_gpt2, make_tiny_llama, opposite_rows, sentiment_rows
from workers.methods import BuildContext, get_method
from workers.methods.prefix import PrefixedEncoder
from workers.methods.prompt import VirtualTokenModel
from workers.model_loading import load_base_model, load_tokenizer
from workers.training.checkpoints import load_trained
from workers.training.data import collate, prepare_data
from workers.training.evaluation import evaluate
from workers.training.loop import seed_everything, train
from workers.training.reporting import MemoryReporter

CPU = torch.device("cpu")
N = 4  # virtual tokens
CONFIGS = {
    "prefix": PrefixMethod(type="prefix", num_virtual_tokens=N),
    "prefix-mlp": PrefixMethod(type="prefix", num_virtual_tokens=N, projection=True, encoder_hidden_size=16),
    "ptuning-mlp": PTuningMethod(type="ptuning", num_virtual_tokens=N, encoder_hidden_size=16),
    "ptuning-lstm": PTuningMethod(type="ptuning", num_virtual_tokens=N, encoder="lstm", encoder_hidden_size=8),
    "prompt-random": PromptMethod(type="prompt", num_virtual_tokens=N),
    "prompt-text": PromptMethod(type="prompt", num_virtual_tokens=N, init="text", init_text="good movie bad"),
    "prompt-vocab": PromptMethod(type="prompt", num_virtual_tokens=N, init="vocab"),
}
MODEL_TASKS = [("bert", "classification"), ("gpt2", "classification"), ("gpt2", "causal_lm"),
               ("llama", "classification"), ("llama", "causal_lm")]
CASES = [(arch, task, key) for arch, task in MODEL_TASKS for key in CONFIGS]
LABELS = ["neg", "pos"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompt-family-models")
    # With BERT's usual 0.02 init a frozen random encoder passes almost nothing of the input to its
    # pooled output; 0.2 keeps the sentiment word visible, so what the methods learn can show.
    return {"bert": str(make_tiny_bert(root / "bert", init_range=0.2)), "gpt2": str(make_tiny_gpt2(root / "gpt2")),
            "llama": str(make_tiny_llama(root / "llama"))}


def build(source: str, task: str, key: str, seed: int = 0):
    """(tokenizer, fresh base state, built model) for one method config."""
    tokenizer = load_tokenizer(source)
    seed_everything(seed)
    base = load_base_model(source, task, LABELS if task == "classification" else None, tokenizer)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_method(CONFIGS[key].type).build(base, CONFIGS[key], task,
                                                BuildContext(source=source, tokenizer=tokenizer))
    return tokenizer, base_state, model


def small_data(source: str, task: str, rows: int = 48):
    tokenizer = load_tokenizer(source)
    if task == "classification":
        return prepare_data(sentiment_rows(rows), None, task=task, columns=Columns(text="text", label="label"),
                            tokenizer=tokenizer, max_length=32, eval_fraction=0.25, seed=0)
    return prepare_data(opposite_rows(rows), None, task=task, columns=Columns(prompt="prompt", response="response"),
                        tokenizer=tokenizer, max_length=32, eval_fraction=0.25, seed=0)


def base_of(model):
    """The transformers model under the method's wrapping."""
    if isinstance(model, VirtualTokenModel):
        return model.peft_model.get_base_model()
    if isinstance(model, PrefixedEncoder):
        return model.base_model
    return model.get_base_model()


def frozen_base_state(model) -> dict[str, torch.Tensor]:
    """The base model's weights under their original names, without the trained head copy."""
    state = {}
    for name, value in base_of(model).state_dict().items():
        if ".modules_to_save." in name:  # peft's trained copy of the head
            continue
        if isinstance(model, PrefixedEncoder) and name.split(".")[0] in model.head_modules:
            continue  # the in-house path trains the head in place
        state[name.replace(".original_module", "")] = value
    return state


def is_method_or_head(model, name: str) -> bool:
    if isinstance(model, PrefixedEncoder):
        return name.startswith("prefix.") or name.split(".")[1] in model.head_modules
    return "prompt_encoder." in name or ".modules_to_save." in name


def expected_trainable(key: str, config, task: str) -> int:
    """DESIGN.md's formulas (+ head). d = hidden size, L = layers, n = virtual tokens."""
    d, layers, n = config.hidden_size, config.num_hidden_layers, N
    method = CONFIGS[key]
    if method.type == "prefix":
        # Prefixes are keys and values: under grouped-query attention (Llama here) they are
        # kv_heads · head_dim wide, not d; for BERT and GPT-2 that is d, the design's n·L·2·d.
        kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        k = kv * (d // config.num_attention_heads)
        h = method.encoder_hidden_size
        if method.projection:
            count = n * k + (k * h + h) + (h * layers * 2 * k + layers * 2 * k)
        else:
            count = n * layers * 2 * k
    elif method.type == "ptuning" and method.encoder == "mlp":
        h = method.encoder_hidden_size
        count = n * d + (d * h + h) + (h * h + h) + (h * d + d)
    elif method.type == "ptuning":  # peft: 2-layer bidirectional LSTM, then Linear(2h, 2h) → ReLU → Linear(2h, d)
        h = method.encoder_hidden_size
        lstm = 2 * (4 * h * d + 4 * h * h + 8 * h) + 2 * (4 * h * 2 * h + 4 * h * h + 8 * h)
        count = n * d + lstm + (2 * h * 2 * h + 2 * h) + (2 * h * d + d)
    else:
        count = n * d
    if task == "classification":
        count += d * len(LABELS) + (len(LABELS) if config.model_type == "bert" else 0)  # GPT-2/Llama: no bias
    return count


def logits_of(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch.inputs).logits


@pytest.mark.parametrize("arch, task, key", CASES)
def test_trainable_count_matches_the_design_formula(sources, arch, task, key):
    _, _, model = build(sources[arch], task, key)
    expected = expected_trainable(key, base_of(model).config, task)
    assert get_method(CONFIGS[key].type).trainable_parameters(model) == expected


@pytest.fixture(scope="module")
def trained(sources):
    """A few optimizer steps per case, shared by the tests below."""
    @cache
    def run(arch: str, task: str, key: str):
        tokenizer, base_state, model = build(sources[arch], task, key)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        data = small_data(sources[arch], task)
        train(model, data, task=task, training=Training(learning_rate=0.05, max_steps=3, batch_size=8),
              pad_id=tokenizer.pad_token_id, reporter=MemoryReporter(), device=CPU)
        model.eval()
        return dict(tokenizer=tokenizer, base_state=base_state, before=before, model=model, data=data)
    return run


@pytest.mark.parametrize("arch, task, key", CASES)
def test_training_changes_only_the_method_and_the_head(trained, arch, task, key):
    run = trained(arch, task, key)
    model = run["model"]
    frozen = frozen_base_state(model)
    expected_frozen = {k: v for k, v in run["base_state"].items() if k in frozen}
    assert frozen.keys() == expected_frozen.keys() and len(frozen) >= len(run["base_state"]) - 2  # minus a head
    for name, value in frozen.items():
        assert torch.equal(value, expected_frozen[name]), f"base weight {name} changed"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(is_method_or_head(model, n) for n in trainable), trainable
    for name, p in model.named_parameters():
        changed = not torch.equal(p, run["before"][name])
        assert changed == p.requires_grad, f"{name}: changed={changed}, trainable={p.requires_grad}"


@pytest.mark.parametrize("arch, task, key", CASES)
def test_save_then_load_on_a_fresh_base_gives_the_same_logits(trained, sources, tmp_path, arch, task, key):
    run = trained(arch, task, key)
    method = get_method(CONFIGS[key].type)
    method.save(run["model"], tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    in_house = arch == "bert" and key.startswith("prefix")
    assert config.get("peftlab_method") == ("prefix" if in_house else None)

    seed_everything(1)  # a differently initialised fresh head: the saved one must replace it
    fresh = load_base_model(sources[arch], task, LABELS if task == "classification" else None, run["tokenizer"])
    loaded = method.load(fresh, tmp_path)
    assert not loaded.training
    batch = collate(run["data"].eval[:8], run["tokenizer"].pad_token_id)
    assert torch.allclose(logits_of(loaded, batch), logits_of(run["model"], batch), atol=1e-5)


# ---- learning ---------------------------------------------------------------------------------

BERT_LEARNING_RATES = {"prefix": 0.05, "prefix-mlp": 0.01, "ptuning-mlp": 0.01, "ptuning-lstm": 0.05,
                       "prompt-random": 0.05, "prompt-text": 0.05, "prompt-vocab": 0.05}


@pytest.fixture(scope="module")
def sentiment_data(sources):
    return prepare_data(sentiment_rows(800), None, task="classification", columns=Columns(text="text", label="label"),
                        tokenizer=load_tokenizer(sources["bert"]), max_length=32, eval_fraction=0.25, seed=0)


@pytest.mark.parametrize("key", CONFIGS)
def test_bert_classifier_learns(sources, sentiment_data, key):
    tokenizer, _, model = build(sources["bert"], "classification", key)
    reporter = MemoryReporter()
    result = train(model, sentiment_data, task="classification", pad_id=tokenizer.pad_token_id, reporter=reporter,
                   device=CPU, training=Training(learning_rate=BERT_LEARNING_RATES[key], max_steps=300, batch_size=16,
                                                 eval_every=300))
    losses = [v for _, v in reporter.series("train/loss")]
    assert sum(losses[-20:]) < 0.8 * sum(losses[:20])
    assert result.eval.metrics["accuracy"] >= 0.7  # chance is 0.5 on 200 held-out rows


# Prefix on both decoders (the peft path); the other variants spread over the two.
CAUSAL_CASES = [("gpt2", "prefix"), ("llama", "prefix"), ("gpt2", "prefix-mlp"), ("llama", "prefix-mlp"),
                ("gpt2", "ptuning-mlp"), ("llama", "ptuning-lstm"), ("gpt2", "prompt-random"),
                ("llama", "prompt-text"), ("gpt2", "prompt-vocab")]


@pytest.mark.parametrize("arch, key", CAUSAL_CASES)
def test_causal_lm_learns_the_response(sources, arch, key):
    tokenizer, _, model = build(sources[arch], "causal_lm", key)
    data = prepare_data(opposite_rows(200), None, task="causal_lm", tokenizer=tokenizer, max_length=32,
                        columns=Columns(prompt="prompt", response="response"), eval_fraction=0.1, seed=0)
    before = evaluate(model, data.eval, task="causal_lm", pad_id=tokenizer.pad_token_id, batch_size=16, device=CPU)
    result = train(model, data, task="causal_lm", pad_id=tokenizer.pad_token_id, reporter=MemoryReporter(), device=CPU,
                   training=Training(learning_rate=0.05, max_steps=80, batch_size=16, eval_every=80))
    assert result.eval.metrics["loss"] < 0.7 * before.metrics["loss"]


# ---- outputs line up with inputs ----------------------------------------------------------------

def test_prefix_on_bert_changes_the_outputs(sources):
    """The transformers-5 pitfall: a prefix that never reaches attention leaves the logits as they were."""
    tokenizer, _, model = build(sources["bert"], "classification", "prefix")
    model.eval()
    batch = tokenizer(["good movie", "bad film really the a"], padding=True, return_tensors="pt")
    with torch.no_grad():
        prefixed, bare = model(**batch).logits, model.base_model(**batch).logits  # base alone: no prefix
        assert not torch.allclose(prefixed, bare, atol=1e-4)
        model.prefix.embedding.zero_()  # zero keys and values still take attention weight: still different
        assert not torch.allclose(model(**batch).logits, bare, atol=1e-4)


def test_bert_prefix_equals_peft_cache_prefix_without_its_position_shift(sources):
    """The in-house injection computes exactly what peft's cache-based prefix does, except that peft
    numbers the real tokens from n (it adds n to position_ids); undoing that shift, they agree."""
    tokenizer, _, ours = build(sources["bert"], "classification", "prefix")
    seed_everything(0)
    theirs = get_peft_model(load_base_model(sources["bert"], "classification", LABELS, tokenizer),
                            PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=N))
    layers, _, n, d = ours.prefix.shape
    with torch.no_grad():  # peft's layout: (n, L·2·d), [layer][key|value] along the last dim
        theirs.prompt_encoder["default"].embedding.weight.copy_(ours.prefix().permute(2, 0, 1, 3).reshape(n, -1))
        theirs.base_model.classifier.modules_to_save["default"].load_state_dict(ours.base_model.classifier.state_dict())
    ours.eval()
    theirs.eval()
    batch = tokenizer(["good movie", "bad film really the a"], padding=True, return_tensors="pt")
    positions = torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])
    with torch.no_grad():
        assert torch.allclose(ours(**batch).logits, theirs(**batch, position_ids=positions - n).logits, atol=1e-6)
        assert not torch.allclose(ours(**batch).logits, theirs(**batch).logits, atol=1e-4)  # peft's shifted positions


@pytest.mark.parametrize("key", ["prefix", "prefix-mlp"])
def test_bert_prefix_is_the_same_under_eager_and_sdpa_attention(sources, key):
    """sdpa gets a boolean mask, eager an additive float one: both must open the prefix columns."""
    tokenizer, _, model = build(sources["bert"], "classification", key)
    model.eval()
    batch = tokenizer(["good movie", "bad film really the a"], padding=True, return_tensors="pt")
    logits = {}
    for implementation in ("sdpa", "eager"):
        model.base_model.set_attn_implementation(implementation)
        with torch.no_grad():
            logits[implementation] = model(**batch).logits
    assert torch.allclose(logits["sdpa"], logits["eager"], atol=1e-5)


def _alone_and_padded(model, tokenizer):
    short, long = "good movie", "bad film really the a this was it and"
    with torch.no_grad():
        alone = model(**tokenizer([short], return_tensors="pt")).logits[0]
        padded = model(**tokenizer([short, long], padding=True, return_tensors="pt")).logits[0]
    return alone, padded


@pytest.mark.parametrize("arch, key", [("bert", "prefix"), ("bert", "prompt-random"), ("gpt2", "prompt-random"),
                                       ("llama", "ptuning-mlp"), ("gpt2", "prefix")])
def test_classification_logits_do_not_depend_on_padding(sources, arch, key):
    """Right padding must not move the pooled position: decoder classifiers pool the last real token,
    which peft's inputs_embeds path loses (VirtualTokenModel restores it)."""
    tokenizer, _, model = build(sources[arch], "classification", key)
    model.eval()
    alone, padded = _alone_and_padded(model, tokenizer)
    assert torch.allclose(alone, padded, atol=1e-5)
    if isinstance(model, VirtualTokenModel) and arch != "bert":
        alone, padded = _alone_and_padded(model.peft_model, tokenizer)  # what plain peft gives
        assert not torch.allclose(alone, padded, atol=1e-4)


@pytest.mark.parametrize("key", ["ptuning-mlp", "prompt-random"])
def test_causal_lm_logits_cover_exactly_the_input_tokens(sources, key):
    tokenizer, _, model = build(sources["llama"], "causal_lm", key)
    batch = tokenizer(["the opposite of up is :"], return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, labels=batch["input_ids"])
    assert out.logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(out.loss)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_peft_prefix_changes_decoder_outputs(sources, arch):
    tokenizer = load_tokenizer(sources[arch])
    seed_everything(0)
    base = load_base_model(sources[arch], "causal_lm", tokenizer=tokenizer).eval()
    batch = tokenizer(["the opposite of up is :"], return_tensors="pt")
    with torch.no_grad():
        bare = base(**batch).logits.clone()
        model = get_method("prefix").build(base, CONFIGS["prefix"], "causal_lm").eval()
        assert isinstance(model, PeftModel)
        prefixed = model(**batch).logits
    assert prefixed.shape == bare.shape and not torch.allclose(prefixed, bare, atol=1e-4)


def test_text_init_copies_the_init_text_embeddings(sources):
    tokenizer, _, model = build(sources["gpt2"], "causal_lm", "prompt-text")
    ids = tokenizer("good movie bad")["input_ids"]  # 3 tokens, repeated up to n = 4
    words = model.peft_model.get_base_model().get_input_embeddings().weight[(ids * 2)[:N]]
    assert torch.equal(model.peft_model.prompt_encoder["default"].embedding.weight, words)


def test_vocab_init_samples_vocabulary_embeddings(sources):
    _, _, model = build(sources["gpt2"], "causal_lm", "prompt-vocab")
    vocabulary = model.peft_model.get_base_model().get_input_embeddings().weight
    for row in model.peft_model.prompt_encoder["default"].embedding.weight:
        assert (vocabulary == row).all(-1).any()


# ---- the whole run ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", [{"type": "prefix", "num_virtual_tokens": 4},
                                    {"type": "ptuning", "num_virtual_tokens": 4, "encoder_hidden_size": 16}])
def test_fine_tune_then_load_trained_reproduces_the_predictions(peftlab_env, sources, tmp_path, method):
    from workers import tasks  # after the test settings are in place

    config = RunCreate.model_validate({
        "dataset_id": 1, "base_model": "tiny", "task": "classification", "eval_fraction": 0.25,
        "columns": {"text": "text", "label": "label"}, "method": method,
        "training": {"learning_rate": 0.05, "max_steps": 10, "batch_size": 16, "eval_every": 10, "max_length": 32}})
    rows = sentiment_rows(80, seed=5)
    summary, artifacts = tasks.fine_tune(config, rows, None, sources["bert"], MemoryReporter(),
                                         artifact_dir=lambda kind: tmp_path / kind)
    assert set(artifacts) == {"adapter", "predictions", "checkpoints"}
    assert summary["trainable_params"] == expected_trainable(
        "prefix" if method["type"] == "prefix" else "ptuning-mlp", load_base_model(sources["bert"], "classification",
                                                                                    LABELS).config, "classification")
    model, tokenizer, _ = load_trained(artifacts["adapter"], sources["bert"])
    first = json.loads(artifacts["predictions"].read_text().splitlines()[0])
    with torch.no_grad():
        probs = model(**tokenizer(rows[first["row"]]["text"], return_tensors="pt")).logits.softmax(-1)[0]
    assert probs.tolist() == pytest.approx(first["probs"], abs=1e-5)
