"""training.precision on the CPU: bf16 base weights with fp32 trainable weights train; auto is fp32;
fp16 falls back to fp32 (no fast fp16 on CPUs). The CUDA choices (bf16 support, loss scaling) are
run in the device script."""
import pytest
import torch

from app.runs.schemas import Columns, LoraMethod, RunCreate, Training
from tests.tiny_models import make_tiny_llama, opposite_rows
from workers.methods import get_method
from workers.model_loading import attention_implementation, load_base_model, load_tokenizer
from workers.training.data import prepare_data
from workers.training.loop import seed_everything, train
from workers.training.precision import resolve_precision, upcast_trainable
from workers.training.reporting import MemoryReporter

CPU = torch.device("cpu")


def test_cpu_precision_choices():
    assert resolve_precision("auto", CPU).name == "fp32"
    assert resolve_precision("bf16", CPU).name == "bf16"
    assert resolve_precision("fp32", CPU).name == "fp32"
    assert resolve_precision("fp16", CPU).name == "fp32"  # the documented fall-back
    assert not resolve_precision("bf16", CPU).scales_loss
    assert not resolve_precision("bf16", CPU).grad_scaler().is_enabled()


def test_precision_field_is_validated():
    base = {"dataset_id": 1, "base_model": "tiny", "task": "causal_lm", "columns": {"text": "text"},
            "method": {"type": "lora"}}
    assert RunCreate.model_validate(base).training.precision == "auto"
    with pytest.raises(ValueError, match="precision"):
        RunCreate.model_validate({**base, "training": {"precision": "int8"}})


def test_bf16_lora_trains_on_the_cpu(sources):
    tokenizer = load_tokenizer(sources["llama"])
    data = prepare_data(opposite_rows(200), None, task="causal_lm", columns=Columns(prompt="prompt", response="response"),
                        tokenizer=tokenizer, max_length=32, eval_fraction=0.1, seed=0)
    seed_everything(0)
    base = load_base_model(sources["llama"], "causal_lm", tokenizer=tokenizer, dtype=torch.bfloat16)
    model = get_method("lora").build(base, LoraMethod(type="lora", r=8, alpha=16, dropout=0.0), "causal_lm")
    upcast_trainable(model)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    assert all(p.dtype == torch.bfloat16 for p in frozen.values())
    before = {n: p.detach().clone() for n, p in frozen.items()}

    reporter = MemoryReporter()
    result = train(model, data, task="causal_lm", pad_id=tokenizer.pad_token_id, reporter=reporter, device=CPU,
                   training=Training(learning_rate=3e-2, max_steps=40, batch_size=16, eval_every=40, precision="bf16"))
    losses = [v for _, v in reporter.series("train/loss")]
    assert sum(losses[-5:]) < 0.6 * sum(losses[:5])
    assert result.eval.metrics["loss"] < losses[0]
    # The optimizer worked on the fp32 copies; the bf16 base is untouched.
    assert all(p.dtype == torch.float32 for p in trainable.values())
    assert all(torch.equal(p, before[n]) and p.dtype == torch.bfloat16 for n, p in frozen.items())


def test_fine_tune_records_the_precision_used(peftlab_env, tmp_path):
    from workers.tasks import fine_tune  # after the test settings: the Celery app reads them on import

    source = str(make_tiny_llama(tmp_path / "llama"))
    config = RunCreate.model_validate({
        "dataset_id": 1, "base_model": "tiny", "task": "causal_lm", "columns": {"text": "text"}, "eval_fraction": 0.2,
        "method": {"type": "lora", "r": 4, "dropout": 0.0},
        "training": {"max_steps": 2, "batch_size": 8, "precision": "fp16"}})
    summary, _ = fine_tune(config, opposite_rows(20), None, source, MemoryReporter(),
                           artifact_dir=lambda kind: tmp_path / "out" / kind)
    assert summary["precision"] == "fp32"  # fp16 asked on a CPU worker: fp32 used, and said so
    assert summary["attention"] == "sdpa"


def test_attention_is_sdpa_unless_flash_attention_can_run(sources):
    assert attention_implementation(CPU, torch.bfloat16) == "sdpa"
    assert attention_implementation(torch.device("cuda"), torch.float32) == "sdpa"  # flash kernels take fp16/bf16 only
    # Asked for where flash-attn is not installed (this machine): transformers' default, not a failed run.
    model = load_base_model(sources["llama"], "causal_lm", attn_implementation="flash_attention_2")
    assert model.config._attn_implementation == "sdpa"
    assert load_base_model(sources["gpt2"], "causal_lm", attn_implementation="sdpa").config._attn_implementation == "sdpa"
