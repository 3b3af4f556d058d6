"""Class names for a label column's values (columns.label_names): AG News labels 1–4 become World,
Sports, Business, Sci/Tech in metrics, the confusion matrix, predictions and the adapter's id2label.

Two forms: a list of names for the distinct values in their natural order (numeric when every value is
an integer, else text order), or a mapping {value: name}. Shared by the server (checked at submit) and
the worker (applied when the labels are built), so it imports neither FastAPI nor torch."""
from collections.abc import Iterable

MAX_NAMES = 1000
MAX_NAME_CHARS = 200
LabelNames = list[str] | dict[str, str]


class LabelNamesError(ValueError):
    """label_names that do not fit the label column's values, worded for the person who wrote them."""


def _as_int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def natural_order(values: Iterable[str]) -> list[str]:
    """1, 2, …, 10 numerically when every value is an integer; text order otherwise."""
    values = sorted(set(values))
    if values and all(_as_int(v) is not None for v in values):
        return sorted(values, key=lambda v: (_as_int(v), v))
    return values


def _shown(values: list[str], limit: int = 10) -> str:
    return ", ".join(repr(v[:40]) for v in values[:limit]) + (", …" if len(values) > limit else "")


def name_map(label_names: LabelNames, values: Iterable[str]) -> dict[str, str]:
    """{label value: class name} for every distinct value; LabelNamesError when a value has no name."""
    ordered = natural_order(values)
    if isinstance(label_names, list):
        if len(label_names) != len(ordered):
            raise LabelNamesError(
                f"{len(label_names)} class names for {len(ordered)} label values ({_shown(ordered)}): give one name "
                "per value in that order, or a mapping {value: name}")
        return dict(zip(ordered, label_names, strict=True))
    missing = [v for v in ordered if v not in label_names]
    if missing:
        raise LabelNamesError(f"no class name for the label value(s) {_shown(missing)}; the mapping must name "
                              f"every value ({_shown(ordered)})")
    return {v: label_names[v] for v in ordered}


def check_names(label_names: LabelNames) -> LabelNames:
    """Names are non-empty, unique and bounded (pydantic bounds the count and each name's length)."""
    names = list(label_names) if isinstance(label_names, list) else list(label_names.values())
    if not names:
        raise ValueError("give at least one class name, or leave label_names out")
    cleaned = [n.strip() for n in names]
    if any(not n for n in cleaned):
        raise ValueError("class names must not be blank")
    repeated = sorted({n for n in cleaned if cleaned.count(n) > 1})
    if repeated:
        raise ValueError(f"class names must be unique ({_shown(repeated)} given twice)")
    if isinstance(label_names, list):
        return cleaned
    return {key.strip(): name for key, name in zip(label_names, cleaned, strict=True)}


def display_order(label_names: LabelNames) -> list[str]:
    """The names in the order the user gave them: rows and columns of the confusion matrix."""
    return list(label_names) if isinstance(label_names, list) else list(label_names.values())
