"""From an experiment request to the run configs it launches: plain dicts in POST /api/runs's shape,
validated afterwards exactly like POST /api/runs. No database here.

Per-method defaults for "every method on this dataset". The learning rates follow each method's
paper or its usual practice; prompt-family methods train few parameters from scratch and need
much higher rates, full fine-tuning moves every pretrained weight and needs a low one:

| method  | settings                                   | learning rate | why |
|---------|--------------------------------------------|---------------|-----|
| lora    | r 8, alpha 16, dropout 0.1                 | 5e-4          | Hu et al. 2021 used 2e-4 to 5e-4 on GLUE |
| adapter | Houlsby, reduction factor 16, relu         | 1e-3          | Houlsby et al. 2019 swept 3e-5 to 3e-3; short runs want the top |
| prefix  | 20 virtual tokens, no projection           | 5e-3          | P-tuning v2 (prefix without reparameterisation) used 5e-3 to 1e-2 |
| ptuning | 20 virtual tokens, MLP encoder, hidden 128 | 1e-2          | a small encoder trained from scratch |
| prompt  | 20 virtual tokens, random init             | 3e-2          | Lester et al. 2021 used 0.3 (Adafactor); AdamW wants less |
| full    | —                                          | 2e-5          | Devlin et al. 2019 fine-tuned BERT at 2e-5 to 5e-5 |

A `learning_rate` given in the request's `training` replaces these for every run.
"""
import copy
import itertools
import json
from math import prod

MAX_RUNS = 64  # one experiment launches at most this many runs

METHOD_PRESETS: dict[str, tuple[dict, float]] = {
    "lora": ({"type": "lora", "r": 8, "alpha": 16, "dropout": 0.1}, 5e-4),
    "adapter": ({"type": "adapter", "variant": "houlsby", "reduction_factor": 16, "non_linearity": "relu"}, 1e-3),
    "prefix": ({"type": "prefix", "num_virtual_tokens": 20, "projection": False}, 5e-3),
    "ptuning": ({"type": "ptuning", "num_virtual_tokens": 20, "encoder": "mlp", "encoder_hidden_size": 128}, 1e-2),
    "prompt": ({"type": "prompt", "num_virtual_tokens": 20, "init": "random"}, 3e-2),
    "full": ({"type": "full"}, 2e-5),
}


class PlanError(ValueError):
    """The request cannot be turned into runs; loc names the field (FastAPI's 422 shape)."""

    def __init__(self, loc: tuple, msg: str):
        super().__init__(msg)
        self.loc, self.msg = loc, msg


def methods_plan(spec: dict) -> list[tuple[str, dict]]:
    """(label, run config) for each chosen method, with that method's preset settings and learning rate."""
    plan = []
    for method in spec["methods"]:
        settings, learning_rate = METHOD_PRESETS[method]
        config = {key: spec[key] for key in ("dataset_id", "eval_dataset_id", "eval_fraction", "base_model",
                                             "task", "columns")}
        config.update(name=run_name(spec["name"], method), method=copy.deepcopy(settings),
                      training={"learning_rate": learning_rate, **spec.get("training", {})})
        plan.append((method, config))
    return plan


def grid_plan(spec: dict) -> list[tuple[str, dict]]:
    """(label, run config) for every combination of the grid's values, applied to the base config."""
    grid: dict[str, list] = spec["grid"]
    for key, values in grid.items():
        if key == "name" or key.startswith("name."):
            raise PlanError(("grid", key), "The run names come from the experiment; grid over something else.")
        seen = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(seen)) != len(seen):
            raise PlanError(("grid", key), f"The values of {key} repeat: each combination would run twice.")
    count = prod(len(values) for values in grid.values())
    if count > MAX_RUNS:
        sizes = " × ".join(str(len(v)) for v in grid.values())
        raise PlanError(("grid",), f"The grid makes {sizes} = {count} runs; at most {MAX_RUNS} per experiment.")
    plan = []
    for combination in itertools.product(*grid.values()):
        config = copy.deepcopy(spec["base"])
        for key, value in zip(grid, combination):
            set_path(config, key, value)
        label = ", ".join(f"{key}={_short(value)}" for key, value in zip(grid, combination))
        config["name"] = run_name(spec["name"], label)
        plan.append((label, config))
    return plan


def set_path(config: dict, dotted: str, value) -> None:
    """config["training"]["learning_rate"] = value for "training.learning_rate" (missing objects are made)."""
    *parents, leaf = dotted.split(".")
    node = config
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parents[:i + 1])
            raise PlanError(("grid", dotted), f"{where} is not an object in the base config, so {dotted} cannot be set.")
        node = child
    node[leaf] = copy.deepcopy(value)


def run_name(experiment: str, label: str) -> str:
    return f"{experiment} · {label}"[:200]


def _short(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)
