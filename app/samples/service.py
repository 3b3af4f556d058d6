"""Per-sample comparison of classification runs on one eval set, from each run's stored predictions
(the `predictions` artifact: one JSON line per eval row with the row index, true and predicted label)."""
from itertools import islice

from sqlalchemy.orm import Session

from app.artifacts import service as artifacts_service
from app.config import Settings
from app.datasets.models import Dataset
from app.datasets.reader import iter_rows
from app.datasets.service import dataset_file
from app.runs.models import Run

FILTERS = ("all", "disagree", "all_wrong")
# With two groups of runs (a, b: e.g. every seed of two methods), rows one group gets right on every seed
# and the other gets wrong on every seed.
GROUP_FILTERS = ("a_right_b_wrong", "b_right_a_wrong")
MAX_RUNS = 20


class NotComparable(ValueError):
    """The runs cannot be shown row by row (wrong task, no predictions, different eval sets): a 422."""


def eval_set(run: Run) -> tuple:
    """What decides a run's eval rows: a separate eval dataset, or the dataset's held-out split
    (split_indices in workers/training/data.py depends on the dataset, eval_fraction and seed only; the seed
    is eval_split_seed when set, else training.seed)."""
    if run.eval_dataset_id is not None:
        return ("dataset", run.eval_dataset_id)
    config = run.config or {}
    seed = config.get("eval_split_seed")
    seed = (config.get("training") or {}).get("seed") if seed is None else seed
    return ("split", run.dataset_id, config.get("eval_fraction"), seed)


def describe(key: tuple) -> str:
    if key[0] == "dataset":
        return f"eval dataset #{key[1]}"
    return f"the held-out {key[2]} of dataset #{key[1]} (seed {key[3]})"


def check_comparable(runs: list[Run]) -> None:
    for run in runs:
        if run.task != "classification":
            raise NotComparable(f"Run {run.id} is a {run.task} run; the per-sample view compares classification runs.")
    keys = {run.id: eval_set(run) for run in runs}
    if len(set(keys.values())) > 1:
        listed = "; ".join(f"run {i}: {describe(k)}" for i, k in keys.items())
        raise NotComparable("These runs were evaluated on different rows, so their predictions cannot be lined up "
                            f"(same dataset, eval_fraction and seed, or the same eval dataset, needed): {listed}.")


def predictions(session: Session, settings: Settings, run: Run) -> dict[int, dict]:
    """row index → {label, prediction, probs} from the run's final evaluation."""
    artifact = artifacts_service.get(session, run_id=run.id, kind="predictions")
    if artifact is None:
        raise NotComparable(f"Run {run.id} has no stored predictions (status: {run.status}); only finished "
                            "classification runs with an eval set have them.")
    rows = artifacts_service.read_predictions(settings, artifact)
    if rows is None:
        raise NotComparable(f"The predictions of run {run.id} are missing from artifact storage.")
    return {int(p["row"]): p for p in rows}


def read_rows(settings: Settings, dataset: Dataset | None, wanted: set[int]) -> dict[int, dict]:
    """Only the rows asked for, reading the file no further than the last of them."""
    if dataset is None or not wanted:
        return {}
    last = max(wanted)
    rows = iter_rows(dataset_file(settings, dataset), dataset.format, dataset.has_header,
                     column_names=dataset.column_names)
    return {i: row for i, row in enumerate(islice(rows, last + 1)) if i in wanted}


def _all(preds: list[dict | None], indices: list[int], right: bool) -> bool:
    """Every run at these indices has a prediction for the row, and each is right (or each is wrong)."""
    return bool(indices) and all(preds[i] is not None and (preds[i]["prediction"] == preds[i]["label"]) == right
                                 for i in indices)


def _keep(preds: list[dict | None], label: str, kind: str, sides: tuple[list[int], list[int]] = ([], [])) -> bool:
    made = [p["prediction"] for p in preds if p is not None]
    if kind == "disagree":
        return len(set(made)) > 1
    if kind == "all_wrong":
        return bool(made) and all(m != label for m in made)
    if kind == "a_right_b_wrong":
        return _all(preds, sides[0], True) and _all(preds, sides[1], False)
    if kind == "b_right_a_wrong":
        return _all(preds, sides[1], True) and _all(preds, sides[0], False)
    return True


def _text(row: dict | None, column: str | None) -> str | None:
    if row is None or not column or row.get(column) is None:
        return None
    return str(row[column])


def compare(session: Session, settings: Settings, runs: list[Run], *, kind: str, offset: int, limit: int,
            group_a: list[int] | None = None, group_b: list[int] | None = None) -> dict:
    """group_a / group_b: run ids (among `runs`) of two groups, for the a_right_b_wrong / b_right_a_wrong filters."""
    check_comparable(runs)
    position = {run.id: i for i, run in enumerate(runs)}
    sides = ([position[i] for i in group_a or []], [position[i] for i in group_b or []])
    filters = FILTERS + (GROUP_FILTERS if group_a and group_b else ())
    per_run = [predictions(session, settings, run) for run in runs]
    all_rows = sorted(set().union(*per_run))
    lined_up = []
    for index in all_rows:
        preds = [p.get(index) for p in per_run]
        label = next(p["label"] for p in preds if p is not None)
        lined_up.append((index, label, preds))
    counts = {k: sum(_keep(preds, label, k, sides) for _, label, preds in lined_up) for k in filters}
    chosen = [entry for entry in lined_up if _keep(entry[2], entry[1], kind, sides)]
    page = chosen[offset:offset + limit]

    first = runs[0]
    source = session.get(Dataset, first.eval_dataset_id or first.dataset_id)
    columns = (first.config or {}).get("columns") or {}
    texts = read_rows(settings, source, {index for index, _, _ in page})
    return {
        "runs": [{"id": run.id, "name": run.name, "method": run.method,
                  "accuracy": (sum(p["prediction"] == p["label"] for p in preds.values()) / len(preds)) if preds else None}
                 for run, preds in zip(runs, per_run)],
        "eval_set": describe(eval_set(first)),
        "groups": {"a": group_a, "b": group_b} if group_a and group_b else None,
        "counts": counts, "total": len(chosen), "offset": offset, "limit": limit,
        "rows": [{"row": index, "label": label,
                  "text": _text(texts.get(index), columns.get("text")),
                  "text_pair": _text(texts.get(index), columns.get("text_pair")),
                  "predictions": [None if p is None else {
                      "prediction": p["prediction"], "correct": p["prediction"] == p["label"],
                      "confidence": max(p["probs"]) if p.get("probs") else None} for p in preds]}
                 for index, label, preds in page],
    }
