"""The dataset pages with hostile files and long cells, in headless Chromium against the real stack
(the server process scans uploads in its sandbox; the page shows what it answers)."""
import re

import pytest

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


def test_a_deeply_nested_upload_shows_why_and_the_list_still_loads(page, api, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_bytes(b'[{"t": ' + b"[" * 100_000 + b"1" + b"]" * 100_000 + b"}]")
    ok = api.post("/api/datasets", files={"file": ("fine.jsonl", b'{"text": "fine", "label": 1}\n')},
                  data={"name": "fine-one"})
    assert ok.status_code == 201, ok.text

    page.goto("/datasets")
    page.set_input_files("#upload-file", str(deep))
    page.click("#upload-submit")
    expect(page.locator("#upload-error")).to_contain_text("nested too deeply")
    assert page.url.endswith("/datasets")
    expect(page.locator("#datasets-body")).to_contain_text("fine-one")  # the listing (no previews) renders
    assert api.get("/api/me").status_code == 200


def test_detail_page_shows_cut_cells_from_the_preview_and_pages(page, api):
    rows = b"".join(b'{"text": "%s", "i": %d}\n' % (b"w" * 3000, i) for i in range(30))
    res = api.post("/api/datasets", files={"file": ("long.jsonl", rows)})
    assert res.status_code == 201, res.text
    page.goto(f"/datasets/{res.json()['id']}")
    expect(page.locator("#rows-body tr")).to_have_count(20)
    expect(page.locator("#rows-body tr").first).to_contain_text("more characters]")
    page.click("#pager-next")
    expect(page.locator("#pager-text")).to_have_text(re.compile(r"Rows 21–30 of 30"))
    expect(page.locator("#rows-body tr").first).to_contain_text("more characters]")
