"""The dataset page: naming a headerless CSV's columns, and the value distribution of a chosen column."""
import pytest

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


def test_name_the_columns_then_see_a_columns_distribution(page, api):
    rows = [("1", f"title {i}", f"text {i}") for i in range(12)] + [("2", f"t {i}", f"x {i}") for i in range(5)]
    csv = "".join(",".join(r) + "\n" for r in rows).encode()
    res = api.post("/api/datasets", files={"file": ("ag.csv", csv)}, data={"has_header": "false"})
    assert res.status_code == 201, res.text
    dataset_id = res.json()["id"]
    page.goto(f"/datasets/{dataset_id}")

    # Headerless: the first column (the usual label place) is counted first.
    expect(page.locator("#distribution-column")).to_have_value("column_1")
    bars = page.locator("#distribution-list .prob-row")
    expect(bars).to_have_count(2)
    expect(bars.nth(0)).to_have_attribute("data-value", "1")
    expect(bars.nth(0)).to_have_attribute("data-count", "12")
    expect(bars.nth(1)).to_have_attribute("data-count", "5")
    expect(page.locator("#distribution-summary")).to_contain_text("2 distinct values in 17 rows")

    # Name the columns; a duplicate is refused with the server's reason first.
    page.click("#rename-columns summary")
    page.fill("#rename-0", "label")
    page.fill("#rename-1", "label")
    page.click("#rename-submit")
    expect(page.locator("#rename-error")).to_contain_text("would both be called 'label'")
    page.fill("#rename-1", "title")
    page.fill("#rename-2", "text")
    page.click("#rename-submit")
    expect(page.locator("#columns-list .column-name")).to_have_text(["label", "title", "text"])
    expect(page.locator("#rename-error")).to_be_hidden()
    expect(page.locator("#rows-head th")).to_have_text(["#", "label", "title", "text"])
    expect(page.locator("#rows-body tr").first).to_contain_text("title 0")
    assert [c["name"] for c in api.get(f"/api/datasets/{dataset_id}").json()["columns"]] == ["label", "title", "text"]

    # The picker follows the new names; another column's values are counted on change.
    expect(page.locator("#distribution-column")).to_have_value("label")
    page.select_option("#distribution-column", "title")
    expect(bars).to_have_count(17)
    expect(page.locator("#distribution-summary")).to_contain_text("17 distinct values")

    page.reload()  # stored, not only shown
    expect(page.locator("#columns-list .column-name")).to_have_text(["label", "title", "text"])
