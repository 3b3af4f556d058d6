"""The server's trainable-parameter estimate (no torch) against DESIGN.md's formulas and against
what the worker's method modules really build on tiny BERT / GPT-2 / Llama models."""
import pytest
import torch

from app.models.inspect import model_facts
from app.models.param_count import EstimateError, estimate, lstm
from app.runs.schemas import AdapterFusionMethod, AdapterMethod, RunCreate
from tests.tiny_models import make_tiny_bert, make_tiny_gpt2, make_tiny_llama
from workers.methods import METHODS, BuildContext, get_method
from workers.model_loading import load_base_model, load_tokenizer

LABELS = ["neg", "pos", "neutral"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("param-count-models")
    return {"bert": make_tiny_bert(root / "bert"), "gpt2": make_tiny_gpt2(root / "gpt2"),
            "llama": make_tiny_llama(root / "llama")}


@pytest.fixture(scope="module")
def facts(sources):
    return {name: model_facts(path) for name, path in sources.items()}


def test_facts_carry_what_the_estimate_needs(facts):
    assert facts["bert"]["hidden_size"] == 32 and facts["bert"]["num_layers"] == 2
    assert facts["llama"]["num_key_value_heads"] == 2 and facts["llama"]["head_dim"] == 8
    assert facts["llama"]["tie_word_embeddings"] is False


def test_design_formulas_on_tiny_bert(facts):
    f = facts["bert"]
    d, L, labels = 32, 2, 2
    head = d * labels + labels
    count = lambda method: estimate(f, "classification", labels, method).trainable_params  # noqa: E731
    assert count({"type": "lora", "r": 4}) == 2 * L * 2 * d * 4 + head  # LoRA on q,v: 2·L·2·d·r
    m = d // 4
    assert count({"type": "adapter", "variant": "houlsby", "reduction_factor": 4}) == 2 * L * (2 * d * m + m + d) + head
    assert count({"type": "adapter", "variant": "pfeiffer", "reduction_factor": 4}) == L * (2 * d * m + m + d) + head
    assert count({"type": "prefix", "num_virtual_tokens": 5}) == 5 * L * 2 * d + head
    h = 16
    assert count({"type": "prefix", "num_virtual_tokens": 5, "projection": True, "encoder_hidden_size": h}) == (
        5 * d + (d * h + h) + (h * 2 * L * d + 2 * L * d) + head)
    assert count({"type": "ptuning", "num_virtual_tokens": 5, "encoder": "mlp", "encoder_hidden_size": h}) == (
        5 * d + (d * h + h) + (h * h + h) + (h * d + d) + head)
    assert count({"type": "prompt", "num_virtual_tokens": 7}) == 7 * d + head
    assert count({"type": "full"}) == f["num_parameters"] + head


def test_lstm_matches_torch():
    assert lstm(32, 16) == sum(p.numel() for p in torch.nn.LSTM(32, 16, num_layers=2, bidirectional=True).parameters())


def test_explicit_targets_and_grouped_query_attention(facts):
    llama = facts["llama"]  # q: 32→32, v: 32→16 (2 KV heads × 8)
    est = estimate(llama, "causal_lm", 2, {"type": "lora", "r": 2})
    assert est.trainable_params == 2 * 2 * ((32 + 32) + (32 + 16)) and est.exact
    bert = estimate(facts["bert"], "classification", 2, {"type": "lora", "r": 1, "target_modules": ["dense"]})
    # attention.output.dense, intermediate.dense, output.dense per layer, plus the pooler
    assert bert.trainable_params == 2 * (64 + 96 + 96) + 64 + (32 * 2 + 2)
    unknown = estimate(facts["bert"], "classification", 2, {"type": "lora", "target_modules": ["nope"]})
    assert not unknown.exact and "nope" in unknown.note


def test_unknown_architecture_is_marked_inexact(facts):
    other = {**facts["bert"], "model_type": "mystery"}
    est = estimate(other, "classification", 2, {"type": "prompt", "num_virtual_tokens": 3})
    assert not est.exact and est.trainable_params == 3 * 32 + 32 * 2 + 2


def test_missing_facts_and_empty_bottleneck_are_refused(facts):
    with pytest.raises(EstimateError, match="shape"):
        estimate({"architecture": None, "num_parameters": None}, "classification", 2, {"type": "full"})
    with pytest.raises(EstimateError, match="bottleneck"):
        estimate(facts["bert"], "classification", 2, {"type": "adapter", "reduction_factor": 64})


def _method_config(method: dict):
    body = {"dataset_id": 1, "columns": {"text": "t", "label": "l"}, "method": method}
    return RunCreate.model_validate(body).method


# (model, task, method) combinations the worker supports, with non-default settings where they matter.
CASES = [
    ("bert", "classification", {"type": "lora", "r": 4}),
    ("bert", "classification", {"type": "lora", "r": 2, "target_modules": ["query", "key", "dense"]}),
    ("gpt2", "classification", {"type": "lora", "r": 4}),
    ("gpt2", "causal_lm", {"type": "lora", "r": 2, "target_modules": ["c_fc", "c_proj"]}),
    ("llama", "causal_lm", {"type": "lora", "r": 4}),
    ("llama", "classification", {"type": "lora", "r": 2, "target_modules": ["k_proj", "v_proj", "down_proj"]}),
    ("bert", "classification", {"type": "adapter", "variant": "houlsby", "reduction_factor": 4}),
    ("gpt2", "causal_lm", {"type": "adapter", "variant": "pfeiffer", "reduction_factor": 8}),
    ("llama", "classification", {"type": "adapter", "reduction_factor": 2}),
    ("bert", "classification", {"type": "prefix", "num_virtual_tokens": 4}),
    ("bert", "classification", {"type": "prefix", "num_virtual_tokens": 4, "projection": True, "encoder_hidden_size": 16}),
    ("gpt2", "causal_lm", {"type": "prefix", "num_virtual_tokens": 4, "projection": True, "encoder_hidden_size": 16}),
    ("llama", "causal_lm", {"type": "prefix", "num_virtual_tokens": 4}),
    ("llama", "causal_lm", {"type": "prefix", "num_virtual_tokens": 3, "projection": True, "encoder_hidden_size": 8}),
    ("bert", "classification", {"type": "ptuning", "num_virtual_tokens": 4, "encoder_hidden_size": 16}),
    ("gpt2", "causal_lm", {"type": "ptuning", "num_virtual_tokens": 4, "encoder": "lstm", "encoder_hidden_size": 8}),
    ("bert", "classification", {"type": "prompt", "num_virtual_tokens": 6}),
    ("llama", "causal_lm", {"type": "prompt", "num_virtual_tokens": 6}),
    ("bert", "classification", {"type": "full"}),
    ("gpt2", "classification", {"type": "full"}),
    ("llama", "classification", {"type": "full"}),
    ("llama", "causal_lm", {"type": "full"}),
]


@pytest.mark.parametrize("arch, task, method", CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_estimate_matches_the_worker_modules(sources, facts, arch, task, method):
    if method["type"] not in METHODS:
        pytest.skip(f"no worker module for {method['type']} yet")
    source = str(sources[arch])
    torch.manual_seed(0)
    base = load_base_model(source, task, LABELS if task == "classification" else None, load_tokenizer(source))
    model = get_method(method["type"]).build(base, _method_config(method), task,
                                             BuildContext(source=source, tokenizer=load_tokenizer(source)))
    real = get_method(method["type"]).trainable_parameters(model)
    est = estimate(facts[arch], task, len(LABELS), method)
    assert est.exact and est.trainable_params == real, est.note


@pytest.mark.parametrize("variant", ["houlsby", "pfeiffer"])
def test_fusion_estimate_matches_the_worker_module(sources, facts, tmp_path, variant):
    source = str(sources["bert"])
    saved = {}
    for run_id in (1, 2):
        base = load_base_model(source, "classification", LABELS)
        adapter = get_method("adapter")
        model = adapter.build(base, AdapterMethod(type="adapter", variant=variant, reduction_factor=4), "classification")
        adapter.save(model, tmp_path / str(run_id))
        saved[run_id] = tmp_path / str(run_id)
    fusion = get_method("adapter_fusion")
    model = fusion.build(load_base_model(source, "classification", LABELS),
                         AdapterFusionMethod(type="adapter_fusion", adapter_run_ids=[1, 2]), "classification",
                         BuildContext(source=source, adapter_dir=saved.__getitem__))
    est = estimate(facts["bert"], "classification", len(LABELS), {"type": "adapter_fusion", "adapter_run_ids": [1, 2]},
                   fusion_variant=variant)
    assert est.trainable_params == fusion.trainable_parameters(model)
    assert est.trainable_params == (2 if variant == "houlsby" else 1) * 2 * 3 * 32 * 32 + 32 * 3 + 3
