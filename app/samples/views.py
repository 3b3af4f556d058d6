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
                  runs: str = Query(max_length=400, description="Run ids separated by commas."),
                  filter: Literal["all", "disagree", "all_wrong"] = "all",
                  offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500)):
    """Each eval row of classification runs evaluated on the same rows (same dataset, eval_fraction and
    seed, or the same eval dataset): its text, true label and every run's prediction. `filter`:
    `disagree` keeps rows where the runs predict different labels, `all_wrong` rows every run got wrong."""
    chosen = [run_or_404(run_id, session, visible) for run_id in parse_run_ids(runs)]
    try:
        return service.compare(session, settings, chosen, kind=filter, offset=offset, limit=limit)
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
