"""The FastAPI application factory: API routers, pages, static files, the reaper."""
import asyncio
import logging
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import HTTPException as FastAPIHTTPException
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.artifacts import views as artifacts_views
from app.config import get_settings
from app.datasets import views as datasets_views
from app.db import get_sessionmaker
from app.metrics import views as metrics_views
from app.models import service as models_service
from app.models import views as models_views
from app.runs import service as runs_service
from app.runs import views as runs_views
from app.templating import ROOT, render

log = logging.getLogger("peftlab")


def _reap_once() -> None:
    settings = get_settings()
    with get_sessionmaker()() as session:
        resent = runs_service.reap(session, settings)
        if resent:
            log.info("re-sent runs %s to the broker", resent)


async def _reaper(interval: float) -> None:
    while True:
        try:
            await run_in_threadpool(_reap_once)
        except Exception:  # noqa: BLE001 — keep reaping whatever one round hit
            log.exception("reaper round failed")
        await asyncio.sleep(interval)


def _seed_models() -> None:
    with get_sessionmaker()() as session:
        models_service.ensure_bundled(session)


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings = get_settings()
    settings.ensure_dirs()
    await run_in_threadpool(_seed_models)
    task = asyncio.create_task(_reaper(settings.reaper_interval_seconds))
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


def create_app() -> FastAPI:
    app = FastAPI(title="peftlab", version="0.1.0", lifespan=lifespan,
                  description="Parameter-efficient fine-tuning experiments: datasets, runs, live metrics, adapters.")
    for module in (datasets_views, runs_views, models_views):
        app.include_router(module.router)
        app.include_router(module.pages)
    app.include_router(metrics_views.router)
    app.include_router(artifacts_views.router)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    uplot = ROOT / "node_modules" / "uplot" / "dist"
    if uplot.is_dir():
        app.mount("/vendor/uplot", StaticFiles(directory=uplot), name="uplot")
    else:
        log.warning("node_modules/uplot is missing: run `npm ci` for the charts")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # Pages get a page, the API gets FastAPI's {"detail": ...}.
        wants_page = not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")
        if wants_page:
            message = exc.detail if isinstance(exc.detail, str) else "Something is wrong with this request."
            return render(request, "error.html", f"Error {exc.status_code}", http_status=exc.status_code,
                          status_code=exc.status_code, message=message)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    return app

