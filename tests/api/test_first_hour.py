"""What a new user meets first: one version everywhere, a favicon, the API described in the repository."""
import re
import tomllib

from app import __version__
from tests.conftest import ROOT


def test_one_version_in_one_place(client):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "app.__version__"}
    assert client.get("/openapi.json").json()["info"]["version"] == __version__
    # The newest numbered release in the README's changelog is the package's version.
    releases = re.findall(r"^- (\d+\.\d+\.\d+) —", (ROOT / "README.md").read_text(), flags=re.M)
    assert releases[0] == __version__


def test_favicon_is_served_without_signing_in(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as anonymous:
        res = anonymous.get("/favicon.ico")
    assert res.status_code == 200
    assert res.headers["content-type"] == "image/x-icon"
    assert res.content[:4] == b"\x00\x00\x01\x00"  # an ICO header


def _xlsx_bytes() -> bytes:
    """A workbook laid out as Excel writes one (a zip of [Content_Types].xml, xl/workbook.xml, a sheet)."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        z.writestr("xl/workbook.xml", '<?xml version="1.0"?><workbook><sheets><sheet name="Sheet1"/></sheets></workbook>')
        z.writestr("xl/worksheets/sheet1.xml", '<?xml version="1.0"?><worksheet><sheetData/></worksheet>')
    return buf.getvalue()


def test_an_excel_upload_is_refused_with_a_plain_message(client):
    for name, body in (("reviews.xlsx", _xlsx_bytes()), ("reviews.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512)):
        res = client.post("/api/datasets", files={"file": (name, body)})
        assert res.status_code in (400, 415, 422), res.text
        assert "Excel files are not supported; export to CSV" in res.json()["detail"], name


def test_the_sample_datasets_upload_and_are_what_the_generator_writes(client, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("examples_generate", ROOT / "examples" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.write_all(tmp_path)
    expected = {"reviews.csv": (200, ["text", "label"]), "chat.jsonl": (50, ["messages"]),
                "instructions.jsonl": (50, ["instruction", "input", "output"])}
    for name, (rows, columns) in expected.items():
        shipped = (ROOT / "examples" / name).read_bytes()
        assert shipped == (tmp_path / name).read_bytes(), f"examples/{name} differs from examples/generate.py's"
        res = client.post("/api/datasets", files={"file": (name, shipped)})
        assert res.status_code == 201, res.text
        body = res.json()
        assert body["num_rows"] == rows and [c["name"] for c in body["columns"]] == columns
        client.delete(f"/api/datasets/{body['id']}")
