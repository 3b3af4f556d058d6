from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from app.auth.deps import Visible
from app.config import Settings, get_settings
from app.ids import parse_id
from app.runs.views import DB, RunDep, run_or_404
from app.samples import service
from app.samples.confusion import confusion
from app.samples.schemas import ConfusionOut, SamplesOut
from app.templating import render

router = APIRouter(prefix="/api/samples", tags=["samples"])
pages = APIRouter(include_in_schema=False)
runs_router = APIRouter(prefix="/api/runs", tags=["samples"])


def parse_run_ids(runs: str) -> list[int]:
    ids = [parse_id(part) for part in runs.split(",") if part.strip()]
    if None in ids:
        raise HTTPException(422, "runs must be run ids separated by commas, e.g. runs=3,4,7.")
    if not ids or len(ids) > service.MAX_RUNS:
        raise HTTPException(422, f"Give 1 to {service.MAX_RUNS} run ids.")
    if len(set(ids)) != len(ids):
        raise HTTPException(422, "runs must not repeat a run.")
    return ids


@router.get("", response_model=SamplesOut,
            responses={422: {"description": "not classification runs with predictions on one eval set"}})
def samples(session: DB, visible: Visible, settings: Annotated[Settings, Depends(get_settings)],
            runs: str | None = Query(None, max_length=400, description="Run ids separated by commas (default: a then b)."),
            a: str | None = Query(None, max_length=400, description="Group A: run ids (e.g. every seed of one method)."),
            b: str | None = Query(None, max_length=400, description="Group B: run ids."),
            filter: Literal["all", "disagree", "all_wrong", "a_right_b_wrong", "b_right_a_wrong"] = "all",
            offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500)):
    """Each eval row of classification runs evaluated on the same rows (same dataset, eval_fraction and
    split seed, or the same eval dataset): its text, true label and every run's prediction. `filter`:
    `disagree` keeps rows where the runs predict different labels, `all_wrong` rows every run got wrong;
    with two groups `a` and `b`, `a_right_b_wrong` keeps rows every run of A got right and every run of B
    got wrong (`b_right_a_wrong` the reverse)."""
    group_a, group_b = (parse_run_ids(a) if a else None), (parse_run_ids(b) if b else None)
    if (group_a is None) != (group_b is None):
        raise HTTPException(422, "Give both groups, a and b, or neither.")
    if group_a and set(group_a) & set(group_b):
        raise HTTPException(422, "A run cannot be in both groups a and b.")
    if filter in service.GROUP_FILTERS and not group_a:
        raise HTTPException(422, f"filter={filter} compares two groups: give them as a=… and b=… (run ids).")
    if runs:
        ids = parse_run_ids(runs)
        if group_a and not set(group_a + group_b) <= set(ids):
            raise HTTPException(422, "Every run of groups a and b must be among runs.")
    elif group_a:
        ids = group_a + group_b
        if len(ids) > service.MAX_RUNS:
            raise HTTPException(422, f"Groups a and b hold {len(ids)} runs; at most {service.MAX_RUNS} together.")
    else:
        raise HTTPException(422, "Give the runs to compare: runs=3,4,7 (or two groups, a=… and b=…).")
    chosen = [run_or_404(run_id, session, visible) for run_id in ids]
    try:
        return service.compare(session, settings, chosen, kind=filter, offset=offset, limit=limit,
                               group_a=group_a, group_b=group_b)
    except service.NotComparable as e:
        raise HTTPException(422, str(e)) from None


@pages.get("/samples")
def samples_page(request: Request):
    return render(request, "samples/view.html", "Per-sample predictions")


@runs_router.get("/{run_id}/confusion", response_model=ConfusionOut,
                 responses={422: {"description": "not a classification run with stored eval predictions"}})
def run_confusion(run: RunDep, session: DB, settings: Annotated[Settings, Depends(get_settings)]):
    """Confusion matrix (rows: true label, columns: predicted) and per-class precision, recall, F1 and
    support of the run's final evaluation, from its stored eval predictions."""
    try:
        return confusion(session, settings, run)
    except service.NotComparable as e:
        raise HTTPException(422, str(e)) from None
