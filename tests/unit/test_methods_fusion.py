"""AdapterFusion (Pfeiffer et al. 2021) on tiny BERT / GPT-2 / Llama: only the fusion layers and the head
train, the fusion formula at initialisation, a self-contained save → load, clear refusals of adapters
that do not fit together, and the paper's point: fusing a well-trained adapter lifts a low-resource task."""
import json
import random
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel

from app.runs.schemas import AdapterFusionMethod, AdapterMethod, Columns, RunCreate, Training
from tests.tiny_models import (NEGATIVE, NEUTRAL, POSITIVE, make_tiny_bert, make_tiny_gpt2, make_tiny_llama,
                               opposite_rows, sentiment_rows)
from workers.methods import get_method
from workers.methods.adapter import CONFIG_FILE, WEIGHTS_FILE
from workers.methods.base import BuildContext
from workers.model_loading import load_base_model, load_tokenizer
from workers.training.data import prepare_data
from workers.training.loop import seed_everything, train
from workers.training.reporting import MemoryReporter

CPU = torch.device("cpu")
LABELS = ["neg", "pos"]
HEADS = ("classifier", "score")
CASES = [("bert", "classification", "houlsby"), ("bert", "classification", "pfeiffer"),
         ("gpt2", "classification", "houlsby"), ("gpt2", "causal_lm", "houlsby"),
         ("llama", "classification", "pfeiffer"), ("llama", "causal_lm", "houlsby")]
CASE_IDS = [f"{arch}-{task}-{variant}" for arch, task, variant in CASES]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return {"bert": str(make_tiny_bert(root / "bert")), "gpt2": str(make_tiny_gpt2(root / "gpt2")),
            "llama": str(make_tiny_llama(root / "llama")),
            "bert-48": str(make_tiny_bert(root / "bert-48", hidden=48))}


def base_model(source: str, task: str, seed: int = 0) -> PreTrainedModel:
    seed_everything(seed)
    return load_base_model(source, task, LABELS, load_tokenizer(source))


def save_adapter_dir(source: str, task: str, out_dir, *, variant: str = "houlsby", reduction_factor: int = 4,
                     non_linearity: str = "relu", seed: int = 0):
    """An Adapter run's saved directory, with random (as if trained) adapter weights."""
    method = get_method("adapter")
    model = method.build(base_model(source, task), AdapterMethod(type="adapter", variant=variant,
                         reduction_factor=reduction_factor, non_linearity=non_linearity), task)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("adapters."):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    method.save(model, out_dir)
    return out_dir


def fusion_of(source: str, task: str, dirs: dict, seed: int = 0):
    """(method, model) fusing the adapters in `dirs` ({run id: directory})."""
    method = get_method("adapter_fusion")
    model = method.build(base_model(source, task, seed), AdapterFusionMethod(type="adapter_fusion",
                         adapter_run_ids=list(dirs)), task, BuildContext(adapter_dir=dirs.__getitem__))
    return method, model


def probe(source: str) -> dict:
    return dict(load_tokenizer(source)(["good movie", "the plot was really bad and boring"], padding=True,
                                       return_tensors="pt"))


def logits(model, inputs: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


@pytest.fixture(scope="module", params=CASES, ids=CASE_IDS)
def fused(request, sources, tmp_path_factory):
    """A fusion of two differently configured adapters after a few optimizer steps."""
    arch, task, variant = request.param
    root = tmp_path_factory.mktemp(f"adapters-{arch}-{task}")
    dirs = {7: save_adapter_dir(sources[arch], task, root / "7", variant=variant, reduction_factor=4, seed=1),
            9: save_adapter_dir(sources[arch], task, root / "9", variant=variant, reduction_factor=8,
                                non_linearity="tanh", seed=2)}
    method, model = fusion_of(sources[arch], task, dirs)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    tokenizer = load_tokenizer(sources[arch])
    if task == "classification":
        rows, columns = sentiment_rows(48), Columns(text="text", label="label")
    else:
        rows, columns = opposite_rows(48), Columns(prompt="prompt", response="response")
    data = prepare_data(rows, None, task=task, columns=columns, tokenizer=tokenizer, max_length=32,
                        eval_fraction=0.25, seed=0)
    train(model, data, task=task, pad_id=tokenizer.pad_token_id, reporter=MemoryReporter(), device=CPU,
          training=Training(learning_rate=0.01, max_steps=3, batch_size=16, eval_every=100))
    return dict(arch=arch, task=task, variant=variant, method=method, model=model, before=before,
                trainable=trainable, dirs=dirs)


def test_trainable_parameters_are_the_fusion_layers_and_the_head(fused):
    model = fused["model"]
    d, layers = model.config.hidden_size, model.config.num_hidden_layers
    locations = 2 if fused["variant"] == "houlsby" else 1
    fusion = layers * locations * 3 * d * d  # Q, K, V (d × d, no biases) at every adapter location
    head = sum(p.numel() for name in HEADS if hasattr(model.base, name) for p in getattr(model.base, name).parameters())
    assert head == (0 if fused["task"] == "causal_lm" else d * 2 + (2 if fused["arch"] == "bert" else 0))
    assert fused["method"].trainable_parameters(model) == fusion + head
    assert all(n.startswith(("fusion.", "base.classifier.", "base.score.")) for n in fused["trainable"])


def test_steps_change_only_the_fusion_layers_and_the_head(fused):
    after = fused["model"].state_dict()
    assert after.keys() == fused["before"].keys()
    for name, value in fused["before"].items():
        trains = name.startswith("fusion.") or name.split(".")[1] in HEADS
        assert torch.equal(after[name], value) != trains, f"{name} {'did not train' if trains else 'changed'}"


def test_save_is_self_contained_and_loads_to_identical_logits(fused, sources, tmp_path):
    arch, method, model = fused["arch"], fused["method"], fused["model"]
    out = tmp_path / "fusion"
    method.save(model, out)
    assert {p.name for p in out.iterdir()} == {CONFIG_FILE, WEIGHTS_FILE}
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["peftlab_method"] == "adapter_fusion" and config["format_version"] == 1
    assert [a["run_id"] for a in config["adapters"]] == [7, 9]
    assert [a["reduction_factor"] for a in config["adapters"]] == [4, 8]
    tensors = load_file(out / WEIGHTS_FILE)
    assert {n.split(".")[0] for n in tensors} == {"adapters", "fusion"} | (
        {"head"} if fused["task"] == "classification" else set())
    assert {n.split(".")[1] for n in tensors if n.startswith("adapters.")} == {"0", "1"}

    for directory in fused["dirs"].values():  # a download needs nothing but itself
        shutil.rmtree(directory)
    inputs = probe(sources[arch])
    loaded = method.load(base_model(sources[arch], fused["task"], seed=1), out)
    assert not loaded.training
    assert torch.allclose(logits(loaded, inputs), logits(model, inputs), atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch,task", [("bert", "classification"), ("llama", "causal_lm")])
def test_fusing_an_adapter_with_itself_starts_as_that_adapter(sources, tmp_path, arch, task):
    """V = identity and equal keys (→ equal attention weights) make h + Σ ψ_n V z_n = h + z: the adapter."""
    directory = save_adapter_dir(sources[arch], task, tmp_path / "a", seed=3)
    inputs = probe(sources[arch])
    adapter = get_method("adapter").load(base_model(sources[arch], task), directory)
    _, fusion = fusion_of(sources[arch], task, {1: directory, 2: directory})
    fusion.base.load_state_dict(adapter.base.state_dict())  # the same head
    assert torch.allclose(logits(fusion, inputs), logits(adapter, inputs), atol=1e-5, rtol=0)


def test_adapters_that_do_not_fit_together_are_refused(sources, tmp_path):
    bert = sources["bert"]
    houlsby = save_adapter_dir(bert, "classification", tmp_path / "houlsby")
    pfeiffer = save_adapter_dir(bert, "classification", tmp_path / "pfeiffer", variant="pfeiffer")
    wider = save_adapter_dir(sources["bert-48"], "classification", tmp_path / "wider")
    gpt2 = save_adapter_dir(sources["gpt2"], "classification", tmp_path / "gpt2")
    with pytest.raises(ValueError, match="run 1 has variant 'houlsby', run 2 has variant 'pfeiffer'"):
        fusion_of(bert, "classification", {1: houlsby, 2: pfeiffer})
    with pytest.raises(ValueError, match="run 1 has hidden_size 32, run 2 has hidden_size 48"):
        fusion_of(bert, "classification", {1: houlsby, 2: wider})
    with pytest.raises(ValueError, match="run 1 has family 'bert', run 2 has family 'gpt2'"):
        fusion_of(bert, "classification", {1: houlsby, 2: gpt2})
    with pytest.raises(ValueError, match="base model with hidden_size 48; this one has 32"):
        fusion_of(bert, "classification", {1: wider, 2: save_adapter_dir(sources["bert-48"], "classification",
                                                                         tmp_path / "wider-2")})
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / CONFIG_FILE).write_text(json.dumps({"peft_type": "LORA", "r": 8}))  # a peft directory
    with pytest.raises(ValueError, match="holds a non-peftlab result, not an adapter one"):
        fusion_of(bert, "classification", {1: houlsby, 2: lora})
    with pytest.raises(LookupError, match="run 3's adapter is not available"):
        get_method("adapter_fusion").build(base_model(bert, "classification"),
                                           AdapterFusionMethod(type="adapter_fusion", adapter_run_ids=[3, 4]),
                                           "classification")


# --- the paper's claim in miniature, through the worker's fine_tune ----------------------------------

def recommend_rows(n: int, seed: int) -> list[dict]:
    """A second task: would the writer recommend it? Labelled recommend / avoid."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        recommend = rng.random() < 0.5
        words = rng.sample(NEUTRAL, rng.randint(1, 6))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if recommend else NEGATIVE))
        rows.append({"text": " ".join(words), "label": "recommend" if recommend else "avoid"})
    return rows


def test_fusion_lifts_a_low_resource_task_above_its_own_adapter(peftlab_env, tmp_path):
    """Adapter 1 learns sentiment from 1000 rows; adapter 2 learns `recommend` from 48 rows and stays weak.
    Fusing both, trained on the same 48 rows, draws on adapter 1 and beats adapter 2 on its own task."""
    from workers.tasks import fine_tune  # after the test settings: the Celery app reads them on import

    # d = 64 with 0.1 init: frozen random attention must carry the sentiment word to [CLS] (see the adapter tests).
    source = str(make_tiny_bert(tmp_path / "bert", hidden=64, init_range=0.1))
    few, held_out = recommend_rows(48, seed=1), recommend_rows(200, seed=2)

    def run(run_id: int, method: dict, rows, eval_rows, lr: float, epochs: int, batch_size: int) -> dict:
        config = RunCreate.model_validate({
            "dataset_id": 1, "base_model": "tiny-bert", "task": "classification", "eval_fraction": 0.2,
            "columns": {"text": "text", "label": "label"}, "method": method,
            "training": {"learning_rate": lr, "epochs": epochs, "batch_size": batch_size, "eval_every": 1000,
                         "max_length": 32}})
        summary, _ = fine_tune(config, rows, eval_rows, source, MemoryReporter(),
                               artifact_dir=lambda kind: tmp_path / str(run_id) / kind,
                               find_adapter=lambda other: tmp_path / str(other) / "adapter")
        return summary["eval"]

    adapter = {"type": "adapter", "variant": "houlsby", "reduction_factor": 2}
    strong = run(1, adapter, sentiment_rows(1000), None, 0.01, 8, 32)
    weak = run(2, adapter, few, held_out, 0.01, 10, 16)
    fusion = run(3, {"type": "adapter_fusion", "adapter_run_ids": [1, 2]}, few, held_out, 0.003, 5, 16)
    assert strong["accuracy"] >= 0.9
    assert weak["accuracy"] <= 0.8  # 48 rows are too few for an adapter of its own
    assert fusion["accuracy"] >= weak["accuracy"] + 0.15 and fusion["accuracy"] >= 0.85
