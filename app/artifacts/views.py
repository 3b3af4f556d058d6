from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.background import BackgroundTask

from app.artifacts import service
from app.config import Settings, get_settings
from app.storage import service as storage
from app.storage.base import MissingObject
from app.runs.views import DB, RunDep

router = APIRouter(prefix="/api/runs", tags=["artifacts"])
Conf = Annotated[Settings, Depends(get_settings)]
PRESIGNED = "to a presigned URL of the object store (PEFTLAB_STORAGE_PRESIGNED_DOWNLOADS)"


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: str
    size_bytes: int


@router.get("/{run_id}/artifacts", response_model=list[ArtifactOut])
def list_artifacts(run: RunDep, session: DB):
    return service.for_run(session, run_id=run.id)


@router.get("/{run_id}/adapter", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "the adapter directory, zipped"},
                       307: {"description": PRESIGNED},
                       404: {"description": "no adapter yet, or no best checkpoint (which=best)"}})
def download_adapter(run: RunDep, session: DB, settings: Conf,
                     which: Literal["best", "last"] | None = Query(
                         None, description="best: the best checkpoint's weights (training.metric_for_best); "
                         "last: the last step's. Default: best when the run tracks one, else last.")):
    """The trained adapter as a zip: for peft methods a directory `PeftModel.from_pretrained` loads."""
    missing = f"Run {run.id} has no adapter yet (status: {run.status})."
    tracks_best = bool(((run.config or {}).get("training") or {}).get("metric_for_best"))
    if which == "best" and not tracks_best:
        raise HTTPException(404, f"Run {run.id} keeps no best checkpoint: it was started without training.metric_for_best.")
    if which == "last" and service.get(session, run_id=run.id, kind="adapter_last") is not None:
        return _zipped(run, session, settings, "adapter_last", missing)  # the best step was not the last
    return _zipped(run, session, settings, "adapter", missing)


@router.get("/{run_id}/merged", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "the merged model directory, zipped"},
                       307: {"description": PRESIGNED},
                       404: {"description": "the run has no merged model"}})
def download_merged(run: RunDep, session: DB, settings: Conf):
    """LoRA runs: the base model with the update merged into its weights, as a zip of a directory
    `from_pretrained` loads without peft."""
    why = (f"status: {run.status}" if run.status != "succeeded"
           else "only LoRA runs produce one" if run.method != "lora" else "it was not saved")
    return _zipped(run, session, settings, "merged", f"Run {run.id} has no merged model ({why}).")


def _zipped(run, session, settings: Settings, kind: str, missing: str):
    """A run's artifact directory as a zip under a name the server chooses; 404 with `missing` if absent."""
    artifact = service.get(session, run_id=run.id, kind=kind)
    if artifact is None:
        raise HTTPException(404, missing)
    filename = f"peftlab-run-{run.id}-{kind}.zip"
    if storage.is_remote(settings):
        return _stored_zip(settings, f"{artifact.path}.zip", filename,
                           f"The {kind} files of run {run.id} are missing from artifact storage.")
    source = service.absolute_path(settings, artifact)
    if not source.is_dir():
        raise HTTPException(404, f"The {kind} files of run {run.id} are missing from artifact storage.")
    archive = service.zip_to_tempfile(settings, source)
    return FileResponse(archive, media_type="application/zip", filename=filename,
                        background=BackgroundTask(archive.unlink, missing_ok=True))


def _stored_zip(settings: Settings, key: str, filename: str, missing: str):
    """The zip the worker uploaded beside the folder: a 307 to a presigned URL when the settings say so
    (the bytes never pass through the server), else streamed from the object store."""
    store = storage.artifact_store(settings)
    try:
        info = store.stat(key)
    except MissingObject:
        raise HTTPException(404, missing) from None
    if settings.storage_presigned_downloads and (url := store.presign(
            key, expires_s=settings.storage_presign_seconds, filename=filename)):
        return RedirectResponse(url, status_code=307)
    return StreamingResponse(store.iter_bytes(key), media_type="application/zip", headers={
        "Content-Length": str(info.size), "Content-Disposition": f'attachment; filename="{filename}"'})


class PredictionsOut(BaseModel):
    rows: list[dict]


@router.get("/{run_id}/predictions", response_model=PredictionsOut)
def get_predictions(run: RunDep, session: DB, settings: Conf):
    """The final evaluation's per-row predictions (classification): row index, label, prediction, probabilities."""
    artifact = service.get(session, run_id=run.id, kind="predictions")
    if artifact is None:
        raise HTTPException(404, f"Run {run.id} has no predictions (status: {run.status}).")
    rows = service.read_predictions(settings, artifact)
    if rows is None:
        raise HTTPException(404, f"The predictions of run {run.id} are missing from artifact storage.")
    return PredictionsOut(rows=rows)
