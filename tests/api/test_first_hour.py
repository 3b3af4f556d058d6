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
