"""Confusion matrix and per-class precision / recall / F1 of a classification run's eval set, from its
stored predictions (the `predictions` artifact), in plain Python: the server never imports torch."""
from collections import Counter

from sqlalchemy.orm import Session

from app.config import Settings
from app.runs.label_names import display_order
from app.runs.models import Run
from app.samples.service import NotComparable, predictions

MAX_CLASSES = 100  # a bigger matrix is unreadable on a page; the per-sample view still works


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None  # undefined (no predictions of / no rows of the class), not 0


def confusion(session: Session, settings: Settings, run: Run) -> dict:
    if run.task != "classification":
        raise NotComparable(f"Run {run.id} is a {run.task} run; a confusion matrix needs a classification run.")
    pairs = [(p["label"], p["prediction"]) for p in predictions(session, settings, run).values()]
    labels = sorted({label for pair in pairs for label in pair})  # the run's label ids are sorted strings too
    named = ((run.config or {}).get("columns") or {}).get("label_names")
    if named:  # class names: in the order the user gave them
        order = {name: i for i, name in enumerate(display_order(named))}
        labels.sort(key=lambda label: (order.get(label, len(order)), label))
    if len(labels) > MAX_CLASSES:
        raise NotComparable(f"Run {run.id} has {len(labels)} classes; a confusion matrix is shown for up to "
                            f"{MAX_CLASSES}. The per-sample view lists every prediction.")
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]  # rows: true label, columns: predicted label
    for label, predicted in pairs:
        matrix[index[label]][index[predicted]] += 1
    support = Counter(label for label, _ in pairs)
    predicted_count = Counter(predicted for _, predicted in pairs)
    per_class = []
    for i, label in enumerate(labels):
        tp = matrix[i][i]
        precision, recall = _ratio(tp, predicted_count[label]), _ratio(tp, support[label])
        f1 = _ratio(2 * tp, support[label] + predicted_count[label])  # = 2PR/(P+R), defined when either is
        per_class.append({"label": label, "precision": precision, "recall": recall, "f1": f1, "support": support[label]})
    correct = sum(matrix[i][i] for i in range(len(labels)))
    return {"labels": labels, "matrix": matrix, "per_class": per_class, "total": len(pairs),
            "accuracy": _ratio(correct, len(pairs))}
