"""Browser tests of accounts: first-start setup, sign in/out, and user strings rendering inert."""
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from tests.conftest import ROOT, _free_port, _stop, make_account

pytestmark = pytest.mark.e2e
expect = pytest.importorskip("playwright.sync_api").expect

SCRIPT_NAME = '<script>window.__xss = "name"</script>'
SCRIPT_CELL = '<script>window.__xss = "cell"</script><img src=x onerror="window.__xss=\'img\'">'


@pytest.fixture
def fresh_server(tmp_path):
    """A server on an empty database: nobody has an account yet."""
    env = {**os.environ, "PEFTLAB_DATA_DIR": str(tmp_path / "data")}
    env.pop("PEFTLAB_DATABASE_URL", None)
    subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], env=env, cwd=ROOT, check=True, capture_output=True)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            httpx.get(f"{url}/openapi.json", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url
    _stop(proc)


def test_first_start_asks_for_the_admin_account(browser, fresh_server):
    context = browser.new_context(base_url=fresh_server)
    page = context.new_page()
    page.goto("/datasets")
    expect(page).to_have_url(f"{fresh_server}/setup")
    expect(page.get_by_role("heading", name="Welcome to peftlab")).to_be_visible()
    page.fill("#username", "root-admin")
    page.fill("#password", "a long password")
    page.fill("#confirm", "a different one")
    page.click("button[type=submit]")
    expect(page.locator(".alert-error")).to_contain_text("The two passwords differ")
    page.fill("#password", "a long password")
    page.fill("#confirm", "a long password")
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{fresh_server}/runs")
    expect(page.locator(".user-name")).to_have_text("root-admin")
    page.goto("/setup")
    expect(page).to_have_url(f"{fresh_server}/runs")  # only once; signed in, it goes home
    context.clear_cookies()
    page.goto("/setup")
    expect(page).to_have_url(f"{fresh_server}/login")
    context.close()


def test_sign_in_and_out_in_the_browser(anon_page, live_stack):
    make_account("browser-user")
    anon_page.goto("/runs/new")
    expect(anon_page).to_have_url(f"{live_stack.url}/login?next=%2Fruns%2Fnew")
    anon_page.fill("#username", "browser-user")
    anon_page.fill("#password", "wrong password")
    anon_page.click("button[type=submit]")
    expect(anon_page.locator(".alert-error")).to_contain_text("Wrong username or password")
    anon_page.fill("#password", "correct horse battery")
    anon_page.click("button[type=submit]")
    expect(anon_page).to_have_url(f"{live_stack.url}/runs/new")
    anon_page.wait_for_load_state("load")  # the Sign out button's module script has run (a busy machine is slow)
    anon_page.click("[data-logout]")
    expect(anon_page).to_have_url(f"{live_stack.url}/login")
    assert httpx.get(f"{live_stack.url}/api/me", cookies={c["name"]: c["value"] for c in anon_page.context.cookies()}).status_code == 401


def test_script_in_names_and_cells_renders_as_text(page, live_stack):
    api = httpx.Client(base_url=live_stack.url, headers=live_stack.headers, timeout=30)
    csv = f'text,label\n"{SCRIPT_CELL.replace(chr(34), chr(34) * 2)}",pos\nplain,neg\n'.encode()
    ds = api.post("/api/datasets", files={"file": ("x.csv", csv)}, data={"name": SCRIPT_NAME, "has_header": "true"}).json()
    assert ds["name"] == SCRIPT_NAME
    run = api.post("/api/runs", json={"name": SCRIPT_NAME, "dataset_id": ds["id"], "eval_fraction": 0.5,
                                      "columns": {"text": "text", "label": "label"}, "method": {"type": "lora"},
                                      "base_model": f"missing-{uuid.uuid4().hex[:4]}"})
    assert run.status_code == 422  # the base model does not exist; the message echoes user input
    for path in ("/datasets", f"/datasets/{ds['id']}", f"/runs/new?dataset_id={ds['id']}"):
        page.goto(path)
        expect(page.locator("main")).to_contain_text(SCRIPT_NAME)
        page.wait_for_timeout(300)
        assert page.evaluate("window.__xss") is None, path
    page.goto(f"/datasets/{ds['id']}")
    expect(page.locator("main")).to_contain_text('<script>window.__xss = "cell"</script>')
    assert page.evaluate("window.__xss") is None
    assert page.locator("main script").count() == 0 and page.locator("main img[src=x]").count() == 0


def test_api_docs_render_offline_under_the_csp(anon_page):
    anon_page.goto("/docs")
    expect(anon_page.locator(".swagger-ui .title")).to_contain_text("peftlab")
    expect(anon_page.locator(".opblock-summary-path").first).to_be_visible()
    expect(anon_page.locator("button.authorize")).to_be_visible()  # paste an API token there
