"""training.gpus / training.distributed: what the config refuses, with the words the API and the New run
form show (app/runs/checks.py), and the per-process memory estimate a multi-GPU run is judged by."""
import pytest
from pydantic import ValidationError

from app.methods.shape import ModelShape
from app.models.memory import estimate_memory
from app.runs.checks import distributed_problems
from app.runs.schemas import MAX_GPUS, RunCreate


def config(method: dict | None = None, **training) -> RunCreate:
    return RunCreate.model_validate({"dataset_id": 1, "columns": {"text": "t", "label": "l"},
                                     "method": method or {"type": "lora"}, "training": training})


def problems(cfg: RunCreate) -> dict[tuple, str]:
    return {p.loc: p.msg for p in distributed_problems(cfg)}


def test_the_defaults_are_one_process_ddp_and_need_nothing():
    cfg = config()
    assert (cfg.training.gpus, cfg.training.distributed) == (1, "ddp")
    assert problems(cfg) == {}
    assert problems(config(gpus=4, batch_size=32)) == {}
    assert problems(config(gpus=2, distributed="fsdp", batch_size=8)) == {}


@pytest.mark.parametrize("training", [{"gpus": 0}, {"gpus": MAX_GPUS + 1}, {"gpus": "2"}, {"gpus": 1.5},
                                      {"distributed": "deepspeed"}])
def test_out_of_range_values_are_refused_by_the_schema(training):
    with pytest.raises(ValidationError):
        config(**training)


def test_each_process_needs_a_share_of_the_batch():
    found = problems(config(gpus=8, batch_size=4))
    assert "batch_size must be at least gpus" in found[("training", "gpus")]
    assert problems(config(gpus=4, batch_size=4)) == {}


def test_fsdp_needs_several_processes():
    assert "set training.gpus to 2 or more" in problems(config(distributed="fsdp"))[("training", "distributed")]


@pytest.mark.parametrize("method", ["prompt", "ptuning"])
def test_fsdp_with_a_method_that_cannot_shard_is_refused(method):
    found = problems(config({"type": method}, gpus=2, distributed="fsdp"))
    assert f"(method {method}) cannot be sharded with fsdp" in found[("training", "distributed")]
    assert problems(config({"type": method}, gpus=2, distributed="ddp")) == {}  # DDP replicates: any method


def test_fsdp_cannot_shard_a_quantised_base():
    found = problems(config(gpus=2, distributed="fsdp", quantization="4bit"))
    assert "cannot shard a 4bit base" in found[("training", "distributed")]


# MiniLM's shape: BERT, d = 384, 6 layers, 12 heads.
MINILM = ModelShape(model_type="bert", architecture="BertModel", d=384, layers=6, heads=12, kv_heads=12, head_dim=32,
                    intermediate=1536, vocab=30522, num_parameters=22_700_000, tied=False, positions=512)


def test_the_memory_estimate_is_per_process():
    shape = MINILM
    args = dict(task="classification", num_labels=2, method={"type": "full"}, trainable=22_000_000,
                total=22_000_000, device="cuda")
    one = estimate_memory(shape, training={"batch_size": 32, "max_length": 128}, **args)
    ddp = estimate_memory(shape, training={"batch_size": 32, "max_length": 128, "gpus": 2}, **args)
    fsdp = estimate_memory(shape, training={"batch_size": 32, "max_length": 128, "gpus": 2, "distributed": "fsdp"},
                           **args)
    assert ddp.parts["weights"] == one.parts["weights"] and ddp.parts["activations"] < one.parts["activations"]
    assert fsdp.parts["optimizer_states"] * 2 == pytest.approx(one.parts["optimizer_states"], abs=2)
    assert fsdp.total < ddp.total < one.total
