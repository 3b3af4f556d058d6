"""An installed wheel serves the whole UI: build peftlab's wheel, install it into a fresh virtualenv (no checkout,
no node_modules on its path), migrate a fresh database with it, start its server and draw a chart in Chromium.

The fresh venv borrows this interpreter's site-packages through a .pth line (so torch and friends are not
installed again); such a line adds the folder only, so the checkout's editable install stays out of it."""
import json
import os
import site
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest

from app import __version__
from app.db import session_scope, utcnow
from app.metrics.service import record_points
from app.runs.models import Run
from tests.conftest import ROOT, _free_port, _stop, browser_session_cookie

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh venv with the freshly built wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(work / "dist"), str(ROOT)], check=True, cwd=ROOT)
    (wheel,) = (work / "dist").glob("peftlab-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, env=_clean_env())
    # After the install, so pip never sees (nor tries to replace) this environment's peftlab.
    (purelib / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv / "bin"


def _clean_env(**extra) -> dict:
    """This process's environment without PYTHONPATH (the checkout must not leak in)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **extra}


def test_the_wheel_carries_the_browser_assets_and_one_version(installed):
    code = ("import importlib.metadata as m, app, app.resources as r; "
            "print(m.version('peftlab'), app.__version__, r.ROOT)")
    res = subprocess.run([str(installed / "python"), "-c", code], capture_output=True, text=True, cwd=installed,
                         env=_clean_env())
    assert res.returncode == 0, res.stderr
    out = res.stdout.split()
    assert out[0] == out[1] == __version__  # what `pip show peftlab` says is what the app says
    share = Path(out[2])
    assert share.name == "share" and not str(share).startswith(str(ROOT))
    for f in ("static/vendor/uplot/uPlot.iife.min.js", "static/vendor/swagger-ui/swagger-ui-bundle.js",
              "static/vendor/echarts/echarts.min.js", "templates/base.html", "migrations/env.py", "static/favicon.ico"):
        assert (share / f).is_file(), f
    locked = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    assert json.loads((share / "static/vendor/versions.json").read_text()) == {
        "uplot": locked["node_modules/uplot"]["version"],
        "swagger-ui-dist": locked["node_modules/swagger-ui-dist"]["version"],
        "echarts": locked["node_modules/echarts"]["version"]}


def test_the_installed_wheel_migrates_a_fresh_database(installed, tmp_path):
    env = _clean_env(PEFTLAB_DATA_DIR=str(tmp_path))
    env.pop("PEFTLAB_DATABASE_URL", None)
    res = subprocess.run([str(installed / "peftlab"), "db", "upgrade"], capture_output=True, text=True, cwd=tmp_path,
                         env=env)
    assert res.returncode == 0, res.stderr
    assert "latest schema" in res.stdout


@pytest.fixture
def installed_server(installed, peftlab_env, tmp_path):
    """The wheel's `peftlab serve` on this test session's database, started outside the checkout."""
    port = _free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(installed / "peftlab"), "serve", "--port", str(port)], cwd=tmp_path,
                                env=_clean_env(), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            _stop(proc)
            pytest.fail(f"the installed server did not come up:\n{log.read_text(errors='replace')}")
        time.sleep(0.3)
    yield url
    _stop(proc)


def _seed_run_with_curve(dataset_id: int) -> int:
    """A finished LoRA run with a loss curve, written straight into the database: nothing trains here."""
    config = {"name": None, "dataset_id": dataset_id, "eval_dataset_id": None, "eval_fraction": 0.2,
              "base_model": "minilm-l6", "task": "classification", "columns": {"text": "text", "label": "label"},
              "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": None},
              "training": {"learning_rate": 0.001, "epochs": 1, "max_steps": None, "batch_size": 8, "max_length": 64,
                           "seed": 0, "eval_every": 10, "warmup_ratio": 0.0, "weight_decay": 0.0,
                           "gradient_accumulation": 1}}
    with session_scope() as s:
        run = Run(name=f"wheel {uuid.uuid4().hex[:6]}", status="succeeded", config=config,
                  dataset_id=dataset_id, base_model="minilm-l6", method="lora", task="classification", progress=1.0,
                  started_at=utcnow(), finished_at=utcnow(), summary={})
        s.add(run)
        s.flush()
        record_points(s, run.id, [("train/loss", st, 2.0 / (1 + st), 1_700_000_000.0 + st) for st in range(50)])
        return run.id


def test_the_installed_server_draws_charts_and_serves_the_api_docs(installed_server, browser, admin_account):
    url = installed_server
    spec = httpx.get(f"{url}/openapi.json").json()
    assert spec["info"]["version"] == __version__
    assert httpx.get(f"{url}/favicon.ico").status_code == 200
    assert httpx.get(f"{url}/vendor/uplot/uPlot.iife.min.js").status_code == 200
    ds = httpx.post(f"{url}/api/datasets", headers=admin_account.headers,
                    files={"file": ("wheel.csv", b"text,label\n" + b"good,pos\nbad,neg\n" * 5)})
    assert ds.status_code == 201, ds.text
    run_id = _seed_run_with_curve(ds.json()["id"])
    context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 900})
    context.add_cookies(browser_session_cookie(admin_account.username, url))
    page = context.new_page()
    page.goto(f"/runs/{run_id}")
    canvas = page.locator(".uplot canvas").first
    expect(canvas).to_be_visible(timeout=20_000)
    assert canvas.bounding_box()["width"] > 100
    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("peftlab", timeout=20_000)
    expect(page.locator(".swagger-ui .info .title")).to_contain_text(__version__)
    context.close()
