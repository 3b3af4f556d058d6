"""Naming a dataset's columns (PATCH /api/datasets/{id}): a headerless CSV's column_1, column_2, … get
real names. The file is never rewritten: the names are stored as Dataset.column_names and applied to every
row read (reader.iter_rows), while the dataset's `columns` and stored preview are renamed once, here."""
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.models import Dataset
from app.runs.models import Run

# A run config names columns in at most 200 characters (app/runs/schemas.Columns).
MAX_NAME_CHARS = 200


class RenameError(ValueError):
    """A rename that cannot be done, worded for the person asking; `status` is the HTTP answer."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def new_names(current: list[str], requested: dict[str, str] | list[str]) -> list[str]:
    """The columns' names after the rename: `requested` is {current name: new name} or every new name in order."""
    if isinstance(requested, list):
        if len(requested) != len(current):
            raise RenameError(f"Give {len(current)} names, one per column in order (got {len(requested)}).")
        names = list(requested)
    else:
        unknown = [name for name in requested if name not in current]
        if unknown:
            shown = ", ".join(repr(n[:80]) for n in current[:20])
            raise RenameError(f"There is no column {unknown[0][:80]!r} (the columns: {shown}).")
        names = [requested.get(name, name) for name in current]
    names = [name.strip() for name in names]
    for i, name in enumerate(names):
        if not name:
            raise RenameError(f"Column {i + 1}'s new name is empty.")
        if len(name) > MAX_NAME_CHARS:
            raise RenameError(f"Column {i + 1}'s new name has {len(name):,} characters; at most {MAX_NAME_CHARS}.")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise RenameError(f"Columns {seen[name] + 1} and {i + 1} would both be called {name[:80]!r}; "
                              "names must be unique.")
        seen[name] = i
    return names


def rename(session: Session, *, dataset: Dataset, requested: dict[str, str] | list[str],
           preview: list[dict]) -> Dataset:
    """Rename and store; refused (409) while a queued or running run reads the dataset by its old names."""
    current = [c["name"] for c in dataset.columns]
    names = new_names(current, requested)
    busy = list(session.scalars(select(Run.id).where(
        (Run.dataset_id == dataset.id) | (Run.eval_dataset_id == dataset.id),
        Run.status.in_(("queued", "running")))))
    if busy and names != current:
        shown = ", ".join(str(i) for i in busy[:10])
        raise RenameError(f"Runs {shown} are queued or running on this dataset under its current column names; "
                          "rename its columns when they are done.", status=409)
    in_file = {shown: original for original, shown in (dataset.column_names or {}).items()}
    originals = [in_file.get(name, name) for name in current]
    step = dict(zip(current, names, strict=True))
    dataset.column_names = {original: name for original, name in zip(originals, names, strict=True)
                            if original != name} or None
    dataset.columns = [{**column, "name": step[column["name"]]} for column in dataset.columns]
    dataset.preview = [{step.get(key, key): value for key, value in row.items()} if isinstance(row, dict) else row
                       for row in preview]
    session.commit()
    return dataset
