"""GET /api/compare (curves, summaries and config diff of several runs) and the /compare page."""
import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response

from app.auth.deps import Visible
from app.compare import service
from app.compare.schemas import CompareOut, EvalMetric, XAxis
from app.ids import MAX_ID, parse_id
from app.runs.views import DB
from app.templating import render

router = APIRouter(prefix="/api/compare", tags=["compare"])
pages = APIRouter(include_in_schema=False)

MAX_RUNS = 50
MAX_POINTS_CAP = 2000
_IDS = re.compile(r"^\s*\d{1,12}\s*(,\s*\d{1,12}\s*)*,?\s*$")


def parse_ids(raw: str) -> list[int]:
    """"3,1,2" → [3, 1, 2] (repeats dropped); 422 for anything else."""
    if not _IDS.match(raw):
        raise HTTPException(422, "runs must be comma-separated run ids, e.g. runs=1,2,3.")
    ids = list(dict.fromkeys(parse_id(p) for p in raw.split(",") if p.strip()))
    if None in ids:  # beyond any id a table holds
        raise HTTPException(422, f"runs must be run ids from 1 to {MAX_ID}.")
    if len(ids) > MAX_RUNS:
        raise HTTPException(422, f"Compare at most {MAX_RUNS} runs at once.")
    return ids


@router.get("", response_model=CompareOut)
def compare_runs(session: DB, visible: Visible,
                 runs: Annotated[str, Query(max_length=1000, description="Run ids, e.g. 1,2,3.")],
                 names: Annotated[str | None, Query(max_length=2000, description="Metric names; default: losses and eval metrics.")] = None,
                 max_points: Annotated[int, Query(ge=10, le=MAX_POINTS_CAP)] = 1000,
                 x: XAxis = "step",
                 metric: Annotated[EvalMetric | None, Query(description="The eval metric `differences` compare groups in; default: accuracy, else perplexity, F1, loss.")] = None):
    """Several runs side by side: each series downsampled to max_points (min/max buckets keep spikes),
    on the x axis asked for, with the config keys whose values differ. Runs that differ only by seed
    form `groups` (mean and 95% interval of each eval metric over the seeds), and `differences` says for
    every two groups whether `metric` differs by more than noise. Any run the viewer cannot
    see makes the whole answer 404, without saying which."""
    ids = parse_ids(runs)
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else list(service.DEFAULT_NAMES)
    try:
        found = service.visible_runs(session, run_ids=ids, visible=visible)
    except service.RunsNotFound:
        raise HTTPException(404, "One or more of these runs were not found.") from None
    body = service.compare_json(session, runs=found, names=wanted, x=x, max_points=max_points, metric=metric)
    return Response(body, media_type="application/json")


@pages.get("/compare")
def compare_page(request: Request):
    """The page reads ?runs= itself and asks the API, which checks who may see what."""
    return render(request, "compare.html", "Compare runs")
