"""training.quantization on the CPU: bitsandbytes' CPU backend loads a tiny Llama in 4-bit NF4 (and
8-bit), QLoRA trains it through the worker's fine_tune (the loss falls), the adapter saves and loads
on the quantised base again, the merged model is plain; a worker that cannot quantise fails the run
with a reason before loading the model."""
import json

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from app.runs.schemas import RunCreate  # noqa: E402
from tests.tiny_models import make_tiny_llama, opposite_rows  # noqa: E402
from workers.model_loading import load_base_model, load_tokenizer  # noqa: E402
from workers.training import quantization  # noqa: E402
from workers.training.reporting import MemoryReporter  # noqa: E402


def quantised_layers(model) -> list[type]:
    return [type(m) for m in model.modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))]


def run_config(kind: str, **training) -> RunCreate:
    return RunCreate.model_validate({
        "dataset_id": 1, "base_model": "tiny", "task": "causal_lm", "eval_fraction": 0.1,
        "columns": {"prompt": "prompt", "response": "response"},
        "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "training": {"quantization": kind, "learning_rate": 3e-2, "batch_size": 16, "eval_every": 1000, **training}})


def test_the_cpu_backend_runs_both_kinds():
    assert quantization.supported_kinds("cpu") == ("4bit", "8bit")


@pytest.mark.parametrize("kind, layer", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_the_base_loads_quantised_with_the_head_kept(sources, kind, layer):
    tokenizer = load_tokenizer(sources["llama"])
    model = load_base_model(sources["llama"], "classification", ["neg", "pos"], tokenizer, quantization=kind,
                            device=torch.device("cpu"))
    layers = quantised_layers(model)
    # 2 layers × (q, k, v, o, gate, up, down); the classification head `score` stays a trainable nn.Linear
    assert len(layers) == 14 and {t.__name__ for t in layers} == {layer}
    assert type(model.score) is torch.nn.Linear
    if kind == "4bit":
        weight = model.model.layers[0].self_attn.q_proj.weight
        assert weight.quant_state.quant_type == "nf4" and weight.quant_state.nested  # double quantisation


def test_qlora_trains_and_its_adapter_loads_on_the_plain_base(peftlab_env, tmp_path):
    from workers.tasks import fine_tune
    from workers.training.checkpoints import load_trained

    source = str(make_tiny_llama(tmp_path / "llama"))
    reporter = MemoryReporter()
    config = run_config("4bit", max_steps=40, gradient_checkpointing=True, precision="bf16")
    summary, artifacts = fine_tune(config, opposite_rows(200), None, source, reporter,
                                   artifact_dir=lambda kind: tmp_path / "out" / kind)
    losses = [v for _, v in reporter.series("train/loss")]
    assert len(losses) == 40 and sum(losses[-5:]) < 0.6 * sum(losses[:5])
    assert summary["quantization"] == "4bit" and summary["precision"] == "bf16"

    adapter = artifacts["adapter"]
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and (adapter / "adapter_model.safetensors").is_file()
    model, tokenizer, metadata = load_trained(adapter, source)  # Try it, predictions: the quantised base again
    assert metadata["quantization"] == "4bit" and len(quantised_layers(model)) == 14
    assert first_word(model, tokenizer) == "down"

    # The merged download is a plain checkpoint: the dequantised base with the update folded in.
    assert "quantization_config" not in json.loads((artifacts["merged"] / "config.json").read_text())
    merged = load_base_model(str(artifacts["merged"]), "causal_lm")
    assert not quantised_layers(merged) and first_word(merged, tokenizer) == "down"
    # 4-bit weights pack two parameters per element: the count uses their real shapes
    assert summary["total_params"] == sum(p.numel() for p in merged.parameters()) + summary["trainable_params"]


def first_word(model, tokenizer) -> str:
    prompt = tokenizer("the opposite of up is :", return_tensors="pt")
    with torch.inference_mode():
        reply = model.generate(**prompt, max_new_tokens=2, do_sample=False)
    return tokenizer.decode(reply[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True).split()[0]


def test_8bit_with_checkpointing_runs_a_few_steps(peftlab_env, tmp_path):
    from workers.tasks import fine_tune

    source = str(make_tiny_llama(tmp_path / "llama"))
    summary, _ = fine_tune(run_config("8bit", max_steps=3, gradient_checkpointing=True), opposite_rows(40), None,
                           source, MemoryReporter(), artifact_dir=lambda kind: tmp_path / "out" / kind)
    assert summary["quantization"] == "8bit" and summary["steps"] == 3


def test_a_worker_without_bitsandbytes_fails_the_run_before_loading(peftlab_env, tmp_path, monkeypatch):
    from workers import tasks

    monkeypatch.setattr(quantization, "supported_kinds", lambda device_type: ())
    loaded = []
    monkeypatch.setattr(tasks, "load_base_model", lambda *a, **k: loaded.append(1))
    source = str(make_tiny_llama(tmp_path / "llama"))
    with pytest.raises(ValueError, match="training.quantization 4bit: this worker's cpu device can run no quantisation"):
        tasks.fine_tune(run_config("4bit", max_steps=1), opposite_rows(20), None, source, MemoryReporter(),
                        artifact_dir=lambda kind: tmp_path / "out" / kind)
    assert not loaded


def test_the_device_report_lists_the_kinds():
    from workers.device_report import device_info

    device, _ = device_info()
    assert device["quantization"] == ["4bit", "8bit"]


@pytest.mark.parametrize("arch, kind", [("llama", "4bit"), ("gpt2", "4bit"), ("gpt2", "8bit")])
def test_the_merged_model_answers_like_the_quantised_one(peftlab_env, sources, tmp_path, arch, kind):
    """Merged = dequantised base + the folded update: its logits match the quantised base with the adapter
    (GPT-2's Conv1D weights are stored transposed; the copy puts them back)."""
    from workers.tasks import fine_tune
    from workers.training.checkpoints import load_trained

    config = run_config(kind, max_steps=4, precision="fp32")
    _, artifacts = fine_tune(config, opposite_rows(64), None, sources[arch], MemoryReporter(),
                             artifact_dir=lambda k: tmp_path / "out" / k)
    trained, tokenizer, _ = load_trained(artifacts["adapter"], sources[arch])
    merged = load_base_model(str(artifacts["merged"]), "causal_lm").eval()
    ids = tokenizer(["the opposite of up is : down ."], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        want, got = trained(input_ids=ids).logits, merged(input_ids=ids).logits
    plain = load_base_model(sources[arch], "causal_lm").eval()
    with torch.inference_mode():
        unquantised = plain(input_ids=ids).logits
    # 8-bit matmuls round their inputs to int8 too, so only the 4-bit kind matches tightly.
    tolerance = 1e-3 if kind == "4bit" else 0.1
    assert (got - want).abs().max() < tolerance
    assert (got - unquantised).abs().max() > 10 * tolerance  # the comparison can fail: the weights did change


def test_the_predict_worker_serves_a_quantised_model_as_loaded(sources):
    from workers.predict import for_serving

    cpu = torch.device("cpu")
    quantised = load_base_model(sources["llama"], "causal_lm", quantization="4bit", device=cpu)
    assert for_serving(quantised, cpu) is quantised and not quantised.training
    assert len(quantised_layers(quantised)) == 14  # not cast (bitsandbytes models refuse a dtype change)
    plain = for_serving(load_base_model(sources["llama"], "causal_lm"), cpu)
    assert next(plain.parameters()).dtype == torch.float32


@pytest.mark.parametrize("kind", ["4bit", "8bit"])
def test_adapter_fusion_trains_over_adapters_on_a_quantised_base(peftlab_env, sources, tmp_path, kind):
    """AdapterFusion's spec says quantized_base: its adapters (one trained on the plain base, one on a
    quantised one) load beside the quantised base and only the fusion layers and the head train."""
    from tests.tiny_models import sentiment_rows
    from workers.tasks import fine_tune

    def run(run_id: int, method: dict, quantization: str | None) -> dict:
        config = RunCreate.model_validate({
            "dataset_id": 1, "base_model": "tiny", "task": "classification", "eval_fraction": 0.2,
            "columns": {"text": "text", "label": "label"}, "method": method,
            "training": {"max_steps": 2, "batch_size": 8, "quantization": quantization}})
        summary, _ = fine_tune(config, sentiment_rows(40), None, sources["bert"], MemoryReporter(),
                               artifact_dir=lambda k: tmp_path / str(run_id) / k,
                               find_adapter=lambda other: tmp_path / str(other) / "adapter")
        return summary

    run(1, {"type": "adapter"}, None)
    run(2, {"type": "adapter"}, kind)
    fused = run(3, {"type": "adapter_fusion", "adapter_run_ids": [1, 2]}, kind)
    assert fused["quantization"] == kind and fused["steps"] == 2 and 0 < fused["trainable_params"] < 20_000


def test_a_quantised_run_resumes_where_it_stopped(peftlab_env, sources, tmp_path):
    """A worker that dies mid-run: the attempt after it rebuilds the quantised base, loads the checkpoint
    and ends with the loss curve of an uninterrupted run."""
    from workers.tasks import fine_tune
    from workers.training.resume import CheckpointStore

    config = run_config("4bit", max_steps=8, checkpoint_every=3, batch_size=8)
    rows = opposite_rows(64)

    def attempt(name: str, reporter: MemoryReporter, store: CheckpointStore, resume=None):
        return fine_tune(config, rows, None, sources["llama"], reporter, checkpoints=store, resume=resume,
                         artifact_dir=lambda k: tmp_path / name / k)

    whole = MemoryReporter()
    attempt("whole", whole, CheckpointStore(tmp_path / "whole-ckpt"))
    store = CheckpointStore(tmp_path / "split-ckpt")
    first = MemoryReporter(stop_after_steps=5)
    assert attempt("first", first, store) is None  # stopped: the "crash"
    assert store.latest().step == 3
    second = MemoryReporter()
    summary, _ = attempt("second", second, store, resume=store.latest())
    assert summary["steps"] == 8
    curve = [p for p in first.series("train/loss") if p[0] <= 3] + second.series("train/loss")
    assert [s for s, _ in curve] == [s for s, _ in whole.series("train/loss")]
    assert [v for _, v in curve] == pytest.approx([v for _, v in whole.series("train/loss")], abs=1e-5)


def test_the_probe_leaves_the_rng_alone():
    """The first quantised run of a worker probes the device after seeding: the probe must not shift the
    run's initialisation (it did, with torch.randn, and the first run differed from every rerun)."""
    quantization.supported_kinds.cache_clear()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert quantization.supported_kinds("cpu")
    assert torch.equal(torch.rand(3), expected)


def test_the_model_card_of_a_quantised_run_says_how_to_load_its_base():
    from workers.model_card import CardFacts, render_card

    def card(quantization):
        config = RunCreate.model_validate({
            "dataset_id": 3, "base_model": "llama", "task": "causal_lm", "columns": {"text": "text"},
            "method": {"type": "lora"}, "training": {"quantization": quantization}})
        facts = CardFacts(run_id=5, run_name="qlora", config=config, base_reference="org/llama", base_is_hub_id=True,
                          dataset_name="chat.jsonl", summary={"train_examples": 10, "eval_examples": 2, "steps": 3},
                          labels=None)
        return render_card(facts, kind="adapter", is_peft=True, is_whole_model=False)

    assert 'BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"' in card("4bit")
    assert 'quantization "4bit"' in card("4bit")  # the training settings row
    assert "BitsAndBytesConfig(load_in_8bit=True)" in card("8bit")
    assert "BitsAndBytesConfig" not in card(None)
