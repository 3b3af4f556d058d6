"""The methods added through the registry (issue "One method, one place"): each trains what it should,
and its download loads with `peftlab.load` (a PEFT directory where peft has the method) and answers
exactly as the trained model did. Their parameter counts are checked in test_method_registry.py."""
import json

import pytest
import torch

import peftlab
from app.runs.schemas import RunCreate
from tests.tiny_models import sentiment_rows
from workers.methods import BuildContext, get_method
from workers.model_loading import load_base_model, load_tokenizer
from workers.training.checkpoints import save_adapter

LABELS = ["neg", "pos"]
# (method config, task, architecture, what the download must be)
CASES = [
    ({"type": "lora", "use_dora": True}, "classification", "bert", "peft"),
    ({"type": "lora", "use_dora": True, "use_rslora": True}, "causal_lm", "gpt2", "peft"),
    ({"type": "lora", "init": "pissa"}, "classification", "bert", "peft"),
    ({"type": "lora", "init": "pissa", "use_rslora": True}, "causal_lm", "llama", "peft"),
    ({"type": "lora", "init": "olora"}, "causal_lm", "llama", "peft"),
    ({"type": "lora", "init": "pissa"}, "causal_lm", "gpt2", "peft"),
    ({"type": "lora", "init": "gaussian"}, "classification", "llama", "peft"),
    ({"type": "ia3"}, "classification", "bert", "peft"),
    ({"type": "ia3"}, "causal_lm", "gpt2", "peft"),
    ({"type": "ln_tuning"}, "classification", "bert", "peft"),
    ({"type": "ln_tuning"}, "causal_lm", "llama", "peft"),
    ({"type": "bitfit"}, "classification", "bert", "in-house"),
    ({"type": "bitfit"}, "causal_lm", "gpt2", "in-house"),
    ({"type": "vera", "r": 8}, "classification", "bert", "peft"),
    ({"type": "vera", "r": 8}, "causal_lm", "gpt2", "peft"),
    ({"type": "freeze", "trainable_layers": 1}, "classification", "bert", "in-house"),
    ({"type": "freeze", "trainable_layers": 1}, "causal_lm", "llama", "in-house"),
]


def _build(sources, method: dict, task: str, arch: str):
    source = sources[arch]
    tokenizer = load_tokenizer(source)
    torch.manual_seed(0)
    base = load_base_model(source, task, LABELS if task == "classification" else None, tokenizer)
    config = RunCreate.model_validate({"dataset_id": 1, "task": task, "method": method,
                                       "columns": {"text": "text", "label": "label"} if task == "classification"
                                       else {"text": "text"}}).method
    implementation = get_method(method["type"])
    model = implementation.build(base, config, task, BuildContext(source=source, tokenizer=tokenizer))
    return implementation, model, tokenizer, config


@pytest.mark.parametrize("method, task, arch, kind", CASES, ids=lambda v: v["type"] if isinstance(v, dict) else None)
def test_the_download_loads_and_answers_like_the_trained_model(sources, tmp_path, method, task, arch, kind):
    implementation, model, tokenizer, config = _build(sources, method, task, arch)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable, "nothing trains"
    with torch.no_grad():  # stand-in for training: every trained tensor moves
        for p in trainable:
            p.add_(torch.randn_like(p) * 0.05)
    out = tmp_path / "adapter"
    save_adapter(model, implementation, tokenizer, out, task=task, base_model="tiny", method_config=config.model_dump(),
                 labels=LABELS if task == "classification" else None, columns={"text": "text"}, max_length=32)
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["peft_type"] if kind == "peft" else saved["peftlab_method"] == method["type"]
    loaded, loaded_tokenizer, metadata = peftlab.load(out, base=sources[arch])
    texts = [row["text"] for row in sentiment_rows(4, seed=5)]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, loaded(**batch).logits, atol=1e-5)
    if task == "classification":
        answers = peftlab.predict(loaded, loaded_tokenizer, metadata, texts)
        assert [a["label"] in LABELS for a in answers] == [True] * len(texts)


def test_bitfit_is_refused_where_there_are_no_biases(sources):
    """Server and worker share the check (app/runs/checks.py): a Llama has no bias terms."""
    from pathlib import Path

    from app.models.inspect import model_facts
    from app.runs.checks import model_problems

    config = RunCreate.model_validate({"dataset_id": 1, "columns": {"text": "t", "label": "l"},
                                       "method": {"type": "bitfit"}})
    [problem] = model_problems(config, model_facts(Path(sources["llama"])), max_trainable=None)
    assert problem.loc == ("method", "bitfit") and "no bias terms" in problem.msg
    assert model_problems(config, model_facts(Path(sources["bert"])), max_trainable=None) == []


LORA_OPTIONS = [({"type": "lora", "use_dora": True, "r": 3}, arch, task) for arch, task in
                (("bert", "classification"), ("gpt2", "causal_lm"), ("gpt2", "classification"), ("llama", "causal_lm"))]
LORA_OPTIONS += [({"type": "lora", "init": init, "use_rslora": True, "r": 2}, "llama", "classification")
                 for init in ("gaussian", "pissa", "olora")]


@pytest.mark.parametrize("method, arch, task", LORA_OPTIONS)
def test_lora_options_are_counted_exactly(sources, method, arch, task):
    from pathlib import Path

    from app.models.inspect import model_facts
    from app.models.param_count import estimate

    implementation, model, _, config = _build(sources, method, task, arch)
    est = estimate(model_facts(Path(sources[arch])), task, len(LABELS), config.model_dump())
    assert est.exact and est.trainable_params == implementation.trainable_parameters(model), est.note


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_impossible_lora_combinations_are_refused_with_a_reason(init):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        RunCreate.model_validate({"dataset_id": 1, "columns": {"text": "t", "label": "l"},
                                  "method": {"type": "lora", "use_dora": True, "init": init}})
    [error] = info.value.errors()
    assert error["loc"] == ("method", "lora", "init") and "DoRA" in error["msg"]


def test_olora_is_refused_on_gpt2_by_the_shared_check(sources):
    from pathlib import Path

    from app.models.inspect import model_facts
    from app.runs.checks import model_problems

    config = RunCreate.model_validate({"dataset_id": 1, "task": "causal_lm", "columns": {"text": "t"},
                                       "method": {"type": "lora", "init": "olora"}})
    [problem] = model_problems(config, model_facts(Path(sources["gpt2"])), max_trainable=None)
    assert problem.loc == ("method", "lora", "init") and "GPT-2" in problem.msg
    assert model_problems(config, model_facts(Path(sources["llama"])), max_trainable=None) == []
