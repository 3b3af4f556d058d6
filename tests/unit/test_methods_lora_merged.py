"""LoRA's merged-model download: the base model with the trained update folded into its weights,
a plain transformers checkpoint (safetensors, no pickle) that computes what base + adapter does."""
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from app.runs.schemas import Columns, LoraMethod, Training
from tests.tiny_models import make_tiny_bert, make_tiny_gpt2, make_tiny_llama, opposite_rows, sentiment_rows
from workers.methods import get_method
from workers.model_loading import load_base_model, load_tokenizer
from workers.training.data import collate, prepare_data
from workers.training.loop import seed_everything, train
from workers.training.reporting import MemoryReporter

MAKERS = {"bert": make_tiny_bert, "gpt2": make_tiny_gpt2, "llama": make_tiny_llama}


@pytest.mark.parametrize("arch, task", [("bert", "classification"), ("gpt2", "causal_lm"), ("gpt2", "classification"),
                                        ("llama", "classification")])
def test_merged_model_computes_what_the_adapter_model_does(tmp_path, arch, task):
    source = str(MAKERS[arch](tmp_path / arch))
    tokenizer = load_tokenizer(source)
    if task == "classification":
        data = prepare_data(sentiment_rows(40), None, task=task, columns=Columns(text="text", label="label"),
                            tokenizer=tokenizer, max_length=32, eval_fraction=0.2, seed=0)
    else:
        data = prepare_data(opposite_rows(40), None, task=task, columns=Columns(prompt="prompt", response="response"),
                            tokenizer=tokenizer, max_length=32, eval_fraction=0.2, seed=0)
    seed_everything(0)
    lora = get_method("lora")
    model = lora.build(load_base_model(source, task, data.labels, tokenizer),
                       LoraMethod(type="lora", r=4, alpha=8, dropout=0.0), task)
    train(model, data, task=task, training=Training(learning_rate=0.05, max_steps=3, batch_size=8),
          pad_id=tokenizer.pad_token_id, reporter=MemoryReporter(), device=torch.device("cpu"))
    model.eval()
    batch = collate(data.eval[:8], tokenizer.pad_token_id)
    with torch.no_grad():
        expected = model(**batch.inputs).logits.clone()
    lora_state = {k: v.clone() for k, v in model.state_dict().items()}

    artifacts = lora.extra_artifacts(model, lambda kind: tmp_path / "out" / kind)
    merged_dir = artifacts["merged"]
    assert set(artifacts) == {"merged"} and merged_dir == tmp_path / "out" / "merged"
    files = {p.name for p in merged_dir.iterdir()}
    assert {"config.json", "model.safetensors"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)

    # The trained adapter model is untouched: still LoRA, same weights, same outputs.
    assert isinstance(model, PeftModel) and any("lora_B" in k for k in model.state_dict())
    assert all(torch.equal(v, lora_state[k]) for k, v in model.state_dict().items())
    auto = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    merged = auto.from_pretrained(str(merged_dir), use_safetensors=True).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        assert torch.allclose(model(**batch.inputs).logits, expected)
        assert torch.allclose(merged(**batch.inputs).logits, expected, atol=1e-5)
