from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from app.artifacts import service as artifacts_service
from app.config import get_settings
from app.ids import Id
from app.db import release
from app.inference import service
from app.inference.schemas import PredictRequest, PredictResponse
from app.runs.views import DB, RunDep
from app.templating import render

router = APIRouter(prefix="/api/runs", tags=["inference"])
pages = APIRouter(include_in_schema=False)


@router.post("/{run_id}/predict", response_model=PredictResponse,
             responses={409: {"description": "the run has not succeeded"},
                        504: {"description": "no predict worker answered in time"}})
async def predict(body: PredictRequest, run: RunDep, session: DB):
    """Run the trained model (base + adapter) on a few texts. Classification: a label and class
    probabilities per input; causal LM: the text generated after each input. `compare_base` also
    answers with the base model alone."""
    if run.status != "succeeded":
        raise HTTPException(409, f"Run {run.id} has not succeeded (status: {run.status}); only a trained run can predict.")
    columns = (run.config or {}).get("columns") or {}
    if not (columns.get("messages") or columns.get("chat_template")) and any(isinstance(i, list) for i in body.inputs):
        raise HTTPException(422, f"Run {run.id} was not trained on chat data (columns.messages or "
                                 "columns.chat_template); send its inputs as texts, not as lists of turns.")
    adapter = await run_in_threadpool(artifacts_service.get, session, run_id=run.id, kind="adapter")
    if adapter is None:
        raise HTTPException(409, f"Run {run.id} has no saved adapter to predict with.")
    try:
        request_id = await run_in_threadpool(service.create, session, run_id=run.id, body=body)
    except service.BrokerUnavailable as e:
        raise HTTPException(503, str(e)) from None
    await release(session)  # no connection (nor database slot) held while the worker answers
    final = await service.wait_for_answer(request_id, timeout=service.TIMEOUT_SECONDS)
    if final is None:
        queue = get_settings().predict_queue
        raise HTTPException(504, f"No prediction worker answered within {service.TIMEOUT_SECONDS:.0f} s. "
                                 f"Is a worker consuming the queue {queue!r} running (`peftlab worker --queues predict`)?")
    if final["status"] == "failed":
        raise HTTPException(502, f"The prediction failed on the worker: {final['error']}")
    return PredictResponse(outputs=final["outputs"], base_outputs=final["base_outputs"])


@pages.get("/playground")
def playground_page(request: Request, run: Id | None = None):
    """Pick a succeeded run, type inputs, read the base model's and the trained model's answers side by side."""
    return render(request, "inference/playground.html", "Playground", run_id=run)
