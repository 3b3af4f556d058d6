"""The distribution of one column's values (GET /api/datasets/{id}/distribution): the most common values
and their counts, from one streaming pass over the stored file with the same reader as training.

Bounded: at most MAX_DISTINCT values are tracked (each cut to MAX_VALUE_CHARS; later new values count as
"other"), and the pass stops after MAX_SECONDS, answering with what it counted (`complete`: false)."""
import json
import time
from collections import Counter
from dataclasses import dataclass, field

from app.config import Settings
from app.datasets.models import Dataset
from app.datasets.reader import ReadLimits, iter_rows
from app.datasets.service import dataset_file

TOP = 50
MAX_DISTINCT = 100_000
MAX_VALUE_CHARS = 200
MAX_SECONDS = 20.0


@dataclass
class Distribution:
    column: str
    total_rows: int
    rows_counted: int = 0
    missing: int = 0  # rows without the column, or with null / ""
    counts: Counter = field(default_factory=Counter)
    untracked: int = 0  # rows whose value came after MAX_DISTINCT others
    complete: bool = True

    def top(self, n: int = TOP) -> list[tuple[str, int]]:
        return self.counts.most_common(n)

    def other(self, n: int = TOP) -> int:
        """Rows with a value outside the top n."""
        return self.rows_counted - self.missing - sum(count for _, count in self.top(n))


def value_key(value: object) -> str | None:
    """A cell as the text training sees (a label's str()), objects as JSON; None for a missing value."""
    if value is None or value == "":
        return None
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    else:
        text = str(value)
    return text[:MAX_VALUE_CHARS]


def distribution(settings: Settings, dataset: Dataset, column: str, *, max_seconds: float = MAX_SECONDS,
                 max_distinct: int = MAX_DISTINCT) -> Distribution:
    result = Distribution(column=column, total_rows=dataset.num_rows)
    deadline = time.monotonic() + max_seconds
    rows = iter_rows(dataset_file(settings, dataset), dataset.format, dataset.has_header,
                     ReadLimits.from_settings(settings), column_names=dataset.column_names)
    counts = result.counts
    for result.rows_counted, row in enumerate(rows, start=1):
        key = value_key(row.get(column))
        if key is None:
            result.missing += 1
        elif key in counts or len(counts) < max_distinct:
            counts[key] += 1
        else:
            result.untracked += 1
        if result.rows_counted % 1024 == 0 and time.monotonic() > deadline:
            result.complete = result.rows_counted >= dataset.num_rows
            break
    return result
