"""training.gradient_checkpointing: the same loss and gradients as without it (it only trades memory
for recompute), for LoRA and for prompt-tuning (whose frozen embeddings need inputs that require
grads), and the settings it cannot work with are refused before training."""
import pytest
import torch

from app.runs.checks import training_problems
from app.runs.schemas import Columns, LoraMethod, PromptMethod, RunCreate
from tests.tiny_models import opposite_rows
from workers.methods import get_method
from workers.model_loading import load_base_model, load_tokenizer
from workers.training.data import collate, prepare_data
from workers.training.evaluation import batch_loss
from workers.training.grad_checkpointing import enable_gradient_checkpointing
from workers.training.loop import seed_everything


def _loss_and_grads(source: str, method_config, checkpointing: bool):
    tokenizer = load_tokenizer(source)
    data = prepare_data(opposite_rows(16), None, task="causal_lm", columns=Columns(prompt="prompt", response="response"),
                        tokenizer=tokenizer, max_length=32, eval_fraction=0.0, seed=0)
    seed_everything(0)
    base = load_base_model(source, "causal_lm", tokenizer=tokenizer)
    model = get_method(method_config.type).build(base, method_config, "causal_lm")
    if checkpointing:
        enable_gradient_checkpointing(base)
        assert base.is_activation_checkpointing
    model.train()
    loss, _ = batch_loss(model, collate(data.train, tokenizer.pad_token_id), "causal_lm")
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("method_config", [LoraMethod(type="lora", r=8, alpha=16, dropout=0.0),
                                           PromptMethod(type="prompt", num_virtual_tokens=4)], ids=["lora", "prompt"])
def test_checkpointing_gives_the_same_loss_and_gradients(sources, method_config):
    loss, grads = _loss_and_grads(sources["llama"], method_config, checkpointing=False)
    loss_ckpt, grads_ckpt = _loss_and_grads(sources["llama"], method_config, checkpointing=True)
    assert torch.allclose(loss, loss_ckpt, rtol=1e-5)
    assert grads.keys() == grads_ckpt.keys() and grads
    assert sum(g.abs().sum() for g in grads_ckpt.values()) > 0  # gradients flow through the checkpoints
    for name, grad in grads.items():
        assert torch.allclose(grad, grads_ckpt[name], rtol=1e-4, atol=1e-6), name


def _config(method: dict, task: str = "causal_lm", **training) -> RunCreate:
    columns = {"text": "text"} if task == "causal_lm" else {"text": "text", "label": "label"}
    return RunCreate.model_validate({"dataset_id": 1, "base_model": "tiny", "task": task, "columns": columns,
                                     "method": method, "training": training})


def test_settings_that_cannot_work_are_refused():
    problems = training_problems(_config({"type": "prefix"}, gradient_checkpointing=True))
    assert [p.loc for p in problems] == [("training", "gradient_checkpointing")]
    assert "Prefix-tuning cannot use gradient checkpointing" in problems[0].msg
    assert training_problems(_config({"type": "lora"}, gradient_checkpointing=True)) == []
    assert training_problems(_config({"type": "prompt"}, gradient_checkpointing=True)) == []


def test_fine_tune_with_checkpointing_trains_an_adapter(peftlab_env, tmp_path):
    """Through the worker's fine_tune, with a method that wraps the model's layers itself."""
    from tests.tiny_models import make_tiny_gpt2
    from workers.training.reporting import MemoryReporter
    from workers.tasks import fine_tune  # after the test settings: the Celery app reads them on import

    config = _config({"type": "adapter"}, max_steps=3, batch_size=8, gradient_checkpointing=True)
    summary, _ = fine_tune(config, opposite_rows(20), None, str(make_tiny_gpt2(tmp_path / "gpt2")), MemoryReporter(),
                           artifact_dir=lambda kind: tmp_path / "out" / kind)
    assert summary["steps"] == 3 and summary["trainable_params"] > 0
