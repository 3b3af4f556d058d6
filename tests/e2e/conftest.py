"""Headless Chromium for the browser tests: `browser`, `page` (signed in as the admin), `anon_page`."""
import os

import pytest

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("PEFTLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package 'chromium')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _page(browser, live_stack, cookies):
    context = browser.new_context(base_url=live_stack.url, viewport={"width": 1280, "height": 900})
    if cookies:
        context.add_cookies(cookies)
    pg = context.new_page()
    problems: list[str] = []
    # Uncaught exceptions and CSP violations are bugs; 4xx "failed to load" console lines are not.
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on("console", lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None)
    return context, pg, problems


@pytest.fixture
def page(browser, live_stack):
    context, pg, problems = _page(browser, live_stack, live_stack.cookies)
    yield pg
    context.close()
    assert not problems, problems


@pytest.fixture
def anon_page(browser, live_stack):
    context, pg, problems = _page(browser, live_stack, None)
    yield pg
    context.close()
    assert not problems, problems


@pytest.fixture(scope="module")
def api(live_stack):
    """An httpx client signed in as the admin, for arranging what the browser then looks at."""
    import httpx

    with httpx.Client(base_url=live_stack.url, headers=live_stack.headers, timeout=90) as client:
        yield client


@pytest.fixture(scope="module")
def model_id(api, tiny_bert_source):
    """The tiny BERT, registered once per module under a fresh name."""
    import uuid

    res = api.post("/api/models", json={"name": f"tiny-bert-{uuid.uuid4().hex[:8]}", "source": str(tiny_bert_source)})
    assert res.status_code == 201, res.text
    return res.json()["id"]
