"""The FastAPI application factory: API routers, pages, static files, and the periodic jobs (the reaper, the
webhook notifier, the search driver), each run by one replica at a time under a job lease."""
import asyncio
import gc
import logging
import threading
from contextlib import asynccontextmanager, suppress

from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__, errors
from app.artifacts import views as artifacts_views
from app.auth import views as auth_views
from app.auth.deps import LoginRequired, viewer
from app.compare import service as compare_service
from app.compare import views as compare_views
from app.config import get_settings
from app.datasets import views as datasets_views
from app.experiments import views as experiments_views
from app.db import get_sessionmaker
from app.inference import views as inference_views
from app.leases.service import Lease
from app.logs import views as logs_views
from app.metrics import live as metrics_live
from app.metrics import views as metrics_views
from app.models import service as models_service
from app.models import views as models_views
from app.notifications import service as notifications_service
from app.notifications import views as notifications_views
from app.runs import service as runs_service
from app.runs import views as runs_views
from app.samples import views as samples_views
from app.security_headers import SecurityHeaders
from app.worker_status import views as worker_status_views
from app.templating import ROOT, render, templates

log = logging.getLogger("peftlab")


def _reap_once() -> None:
    settings = get_settings()
    with get_sessionmaker()() as session:
        resent = runs_service.reap(session, settings)
        if resent:
            log.info("re-sent runs %s to the broker", resent)


def _leased_round(lease: Lease, round_once) -> None:
    with get_sessionmaker()() as session:
        if not lease.held(session):
            return
    round_once()


async def _every(interval: float, round_once, lease: Lease) -> None:
    """Runs `round_once` in a thread every `interval` seconds on the one replica that holds the job's lease
    (app/leases); a round that fails is logged and the next runs as usual. The loops: the reaper, the webhook
    notifier (here in the server, so a slow receiver never holds a worker) and the search driver."""
    while True:
        try:
            await run_in_threadpool(_leased_round, lease, round_once)
        except DBAPIError as e:
            # The database down or full for a moment: one line, as requests log it; the next round tries again.
            if (problem := errors.database_problem(e)) is None:
                log.exception("%s round failed", lease.name)
            else:
                log.warning("%s round skipped: %s (%s)", lease.name, problem, str(e.orig).strip()[:300])
        except Exception:  # noqa: BLE001 — a bad round must not stop later ones
            log.exception("%s round failed", lease.name)
        await asyncio.sleep(interval)


def _release(leases: list[Lease]) -> None:
    with get_sessionmaker()() as session:
        for lease in leases:
            lease.release(session)


def _search_once() -> None:
    from app.experiments import search

    with get_sessionmaker()() as session:
        search.drive_all(session)


def _notify_once() -> None:
    settings = get_settings()
    with get_sessionmaker()() as session:
        notifications_service.notify_round(session, settings)


def _seed_models() -> None:
    with get_sessionmaker()() as session:
        models_service.ensure_bundled(session)


def _remove_stale_uploads() -> None:
    """Partial uploads a killed server left behind (an upload in progress holds a lock and stays)."""
    from app.datasets.upload import remove_stale_incoming

    remove_stale_incoming(get_settings().upload_dir)


def _preload() -> None:
    """What a first request would otherwise pay for, done once the server is up: the comparison's imports
    and statements, then the collector told to leave everything loaded so far alone (gc.freeze). Without
    that, each full collection walks the ~170,000 objects the imported libraries left (80–110 ms on a 2-core
    machine) and lands inside whichever request happens to allocate at the time: the first comparison
    after a restart took 130 or 300 ms on PostgreSQL depending on whether one did."""
    compare_service.preload()
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings = get_settings()
    settings.ensure_dirs()
    if settings.secret_key is None and not settings.resolved_database_url.startswith("sqlite"):
        log.warning("PEFTLAB_SECRET_KEY is not set: this server signs tasks with the key in %s, which workers "
                    "on other hosts do not have. Set the same PEFTLAB_SECRET_KEY on every server and worker.",
                    settings.data_dir / "secret_key")
    await run_in_threadpool(_remove_stale_uploads)
    await run_in_threadpool(_seed_models)
    metrics_live.start_listening()  # this process's one subscription to announced run changes (live streams)
    # The compare page's statistics library and statements load beside the running server, not in its first request.
    threading.Thread(target=_preload, name="preload", daemon=True).start()
    jobs = [(settings.reaper_interval_seconds, _reap_once, "reaper"),
            (settings.webhook_poll_seconds, _notify_once, "webhook"),
            (settings.search_interval_seconds, _search_once, "search")]
    # A lease outlasts a few rounds, so a holder that renews every round keeps it, and one that dies
    # hands the job over within job_lease_seconds.
    leases = [Lease(name, max(settings.job_lease_seconds, 3 * interval)) for interval, _, name in jobs]
    tasks = [asyncio.create_task(_every(interval, round_once, lease))
             for (interval, round_once, _), lease in zip(jobs, leases)]
    yield
    for task in tasks:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    await metrics_live.stop_listening()
    try:  # a replica that stops cleanly hands its jobs over at once, not after the lease runs out
        await run_in_threadpool(_release, leases)
    except Exception:  # noqa: BLE001 — an unreachable database: the leases then simply expire
        log.warning("could not release the job leases; they expire within %ss", settings.job_lease_seconds)


def _openapi_with_bearer(app: FastAPI) -> dict:
    """The schema, telling clients (and Swagger's Authorize button) that API routes take a Bearer token."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API token: `peftlab token create` or Settings → API tokens."}}
        schema["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def create_app() -> FastAPI:
    app = FastAPI(title="peftlab", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Parameter-efficient fine-tuning experiments: datasets, runs, live metrics, adapters.")
    # Every API route and page needs a signed-in viewer; only the sign-in pages do not.
    signed_in = [Depends(viewer)]
    for router in (datasets_views.router, runs_views.router, models_views.router, metrics_views.router,
                   artifacts_views.router, inference_views.router, auth_views.router, experiments_views.router,
                   experiments_views.queue_router, samples_views.router, samples_views.runs_router,
                   logs_views.router, notifications_views.router):
        app.include_router(router, dependencies=signed_in)
    for router in (datasets_views.pages, runs_views.pages, models_views.pages, auth_views.pages,
                   experiments_views.pages, inference_views.pages, samples_views.pages):
        app.include_router(router, dependencies=signed_in)
    app.include_router(compare_views.router, dependencies=signed_in)
    app.include_router(compare_views.pages, dependencies=signed_in)
    app.include_router(runs_views.methods_router, dependencies=signed_in)
    app.include_router(worker_status_views.router, dependencies=signed_in)
    app.include_router(worker_status_views.pages, dependencies=signed_in)
    app.include_router(auth_views.public_pages)
    errors.install(app)  # 422 that always serialises; 503 while the database or disk cannot serve
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    # Browser libraries: static/vendor (built from the npm lockfile, shipped in the wheel), else a
    # checkout's node_modules where `python -m app.build_assets` has not run yet.
    for url, vendored, package in (("/vendor/uplot", "uplot", "uplot/dist"),
                                   ("/vendor/swagger-ui", "swagger-ui", "swagger-ui-dist"),
                                   ("/vendor/echarts", "echarts", "echarts/dist")):
        folder = next((f for f in (ROOT / "static" / "vendor" / vendored, ROOT / "node_modules" / package)
                       if f.is_dir()), None)
        if folder is not None:
            app.mount(url, StaticFiles(directory=folder), name=url.rsplit("/", 1)[-1])
        else:
            log.warning("static/vendor/%s is missing: run `make install` (npm ci + python -m app.build_assets)",
                        vendored)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return FileResponse(ROOT / "static" / "favicon.ico", media_type="image/x-icon",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/docs", include_in_schema=False)
    def api_docs(request: Request):
        return templates.TemplateResponse(request, "docs.html", {})

    app.openapi = lambda: _openapi_with_bearer(app)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired):
        target = "/login?" + urlencode({"next": exc.next_url})
        return RedirectResponse(target, status_code=303)

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
