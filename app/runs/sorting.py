"""Orders for the runs table. The list is at most a few hundred rows, so it is sorted in Python:
duration and the best eval metric live in timestamps and the summary JSON, which would need
different SQL on SQLite and PostgreSQL."""
from collections.abc import Callable
from datetime import UTC, datetime

from app.runs.models import STATUSES, Run

SORT_KEYS = ("id", "name", "status", "method", "created", "duration", "best")


def duration_seconds(run: Run) -> float | None:
    """Wall time from start to finish, or to now while the run is still going."""
    if run.started_at is None:
        return None
    end = run.finished_at or datetime.now(UTC)
    return (end - run.started_at).total_seconds()


def best_eval(run: Run) -> tuple[int, float] | None:
    """A run's headline eval figure as a value where larger is better: accuracy for classification,
    then F1, else lower perplexity (causal LM) ranked after every accuracy."""
    ev = (run.summary or {}).get("eval") or {}
    if ev.get("accuracy") is not None:
        return (2, float(ev["accuracy"]))
    if ev.get("f1") is not None:
        return (1, float(ev["f1"]))
    if ev.get("perplexity") is not None:
        return (0, -float(ev["perplexity"]))
    return None


_KEYS: dict[str, Callable[[Run], object]] = {
    "id": lambda r: r.id,
    "name": lambda r: (r.name or "").casefold(),
    "status": lambda r: STATUSES.index(r.status) if r.status in STATUSES else len(STATUSES),
    "method": lambda r: r.method or "",
    "created": lambda r: r.created_at,
    "duration": duration_seconds,
    "best": best_eval,
}


def sort_runs(runs: list[Run], key: str, descending: bool) -> list[Run]:
    """Runs ordered by `key` (id breaks ties); runs without a value for the key come last either way."""
    get = _KEYS[key]
    known = [r for r in runs if get(r) is not None]
    missing = [r for r in runs if get(r) is None]
    known.sort(key=lambda r: (get(r), r.id), reverse=descending)
    missing.sort(key=lambda r: r.id, reverse=True)
    return known + missing
