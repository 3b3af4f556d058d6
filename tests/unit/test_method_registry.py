"""The method registry against the worker: every spec (app/methods) has an implementation
(workers/methods) and every implementation a spec, and for every method on a tiny BERT, GPT-2 and
Llama the server's estimate equals the trainable parameters of the model the worker builds. A
method missing on either side fails here; nothing is skipped."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from app.methods import all_specs, markdown_table
from app.models.inspect import model_facts
from app.models.param_count import estimate
from app.runs.schemas import RunCreate
from workers.methods import METHODS, BuildContext, get_method
from workers.model_loading import load_base_model, load_tokenizer

LABELS = ["neg", "pos", "neutral"]
ROOT = Path(__file__).resolve().parents[2]
# Settings that differ from the defaults, so a formula that ignores a field cannot pass by luck.
NON_DEFAULT = {
    "lora": {"r": 3, "target_modules": None},
    "adapter": {"variant": "pfeiffer", "reduction_factor": 4},
    "prefix": {"num_virtual_tokens": 3, "projection": True, "encoder_hidden_size": 8},
    "ptuning": {"num_virtual_tokens": 3, "encoder": "lstm", "encoder_hidden_size": 6},
    "prompt": {"num_virtual_tokens": 5},
    "freeze": {"trainable_layers": 1},
    "vera": {"r": 6},
}
ARCHS = ("bert", "gpt2", "llama")


def test_every_spec_has_an_implementation_and_every_implementation_a_spec():
    specs = {spec.name for spec in all_specs()}
    assert specs == set(METHODS), (f"specs without an implementation: {specs - set(METHODS)}; "
                                   f"implementations without a spec: {set(METHODS) - specs}")


def _imports(code: str) -> list[str]:
    """The modules `code` leaves imported, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"],
                         cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


WEB = ("fastapi", "starlette")


def test_specs_and_checks_import_no_torch():
    loaded = _imports("import app.methods, app.runs.checks, app.runs.schemas, app.models.param_count")
    assert not {"torch", "transformers", "peft"} & set(loaded)


def test_the_predict_worker_and_the_client_import_no_web_layer():
    for code in ("import workers.predict", "import peftlab"):
        loaded = _imports(code)
        assert not [m for m in loaded if m.split(".")[0] in WEB], code
        assert "app.inference.service" not in loaded and "app.templating" not in loaded, code
    assert "app.models.service" not in _imports("import peftlab")


@pytest.fixture(scope="module")
def facts(sources):
    return {arch: model_facts(Path(path)) for arch, path in sources.items()}


def _adapter_dirs(sources, tmp_path_factory, arch: str, task: str, labels) -> dict[int, Path]:
    """Two trained-shape Adapter runs for AdapterFusion to fuse (saved, as the worker would)."""
    root = tmp_path_factory.mktemp(f"fusion-{arch}-{task}")
    adapter = get_method("adapter")
    saved = {}
    for run_id in (1, 2):
        base = load_base_model(sources[arch], task, labels, load_tokenizer(sources[arch]))
        config = RunCreate.model_validate({"dataset_id": 1, "task": task, "columns": _columns(task),
                                           "method": {"type": "adapter", "variant": "pfeiffer",
                                                      "reduction_factor": 4}}).method
        adapter.save(adapter.build(base, config, task), root / str(run_id))
        saved[run_id] = root / str(run_id)
    return saved


def _columns(task: str) -> dict:
    return {"text": "t", "label": "l"} if task == "classification" else {"text": "t"}


def _cases():
    for spec in all_specs():
        for arch in ARCHS:
            tasks = ("classification", "causal_lm") if arch != "bert" else ("classification",)
            for task in tasks:
                if task in spec.tasks and (spec.architectures is None or arch in spec.architectures):
                    yield pytest.param(spec.name, arch, task, id=f"{spec.name}-{arch}-{task}")


@pytest.mark.parametrize("name, arch, task", list(_cases()))
def test_estimate_equals_what_the_worker_builds(sources, facts, tmp_path_factory, name, arch, task):
    labels = LABELS if task == "classification" else None
    source = sources[arch]
    method = {"type": name, **NON_DEFAULT.get(name, {})}
    context = BuildContext(source=source, tokenizer=load_tokenizer(source))
    extra = {}
    if name == "adapter_fusion":
        saved = _adapter_dirs(sources, tmp_path_factory, arch, task, labels)
        method["adapter_run_ids"] = [1, 2]
        context.adapter_dir = saved.__getitem__
        extra["fusion_variant"] = "pfeiffer"
    config = RunCreate.model_validate({"dataset_id": 1, "task": task, "columns": _columns(task),
                                       "method": method}).method
    torch.manual_seed(0)
    base = load_base_model(source, task, labels, load_tokenizer(source))
    implementation = get_method(name)
    model = implementation.build(base, config, task, context)
    est = estimate(facts[arch], task, len(LABELS), config.model_dump(), **extra)
    assert est.exact, est.note
    assert est.trainable_params == implementation.trainable_parameters(model), est.note


def test_the_docs_table_is_the_registrys():
    text = (ROOT / "docs" / "METHODS.md").read_text()
    start = text.index("<!-- registry table:")
    start = text.index("\n", start) + 1
    end = text.index("<!-- end of registry table -->")
    assert text[start:end].strip() == markdown_table(), "docs/METHODS.md's table is stale: paste app.methods.markdown_table()"


def test_the_bundled_models_parameter_count_is_its_parameters():
    """MiniLM's checkpoint also holds the integer position_ids buffer: not a parameter, not counted."""
    from transformers import AutoModel

    from app.models.bundled import bundled_dir

    model = AutoModel.from_pretrained(str(bundled_dir()), use_safetensors=True)
    assert model_facts(bundled_dir())["num_parameters"] == sum(p.numel() for p in model.parameters())
