"""docs/API.md describes the app: every route in /openapi.json has its heading there, and every heading is a
route the app has. A route added without a word in the docs fails here."""
import re

from tests.conftest import ROOT

HEADING = re.compile(r"^### `(GET|POST|PUT|PATCH|DELETE) (/\S*)`$", re.M)


def test_every_route_is_documented_and_every_documented_route_exists(client):
    spec = client.get("/openapi.json").json()
    served = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    documented = set(HEADING.findall((ROOT / "docs" / "API.md").read_text()))
    assert not served - documented, f"routes missing from docs/API.md: {sorted(served - documented)}"
    assert not documented - served, f"docs/API.md lists routes the app does not have: {sorted(documented - served)}"


def test_the_readme_stands_on_its_own():
    readme = (ROOT / "README.md").read_text()
    assert "../shared" not in readme
    for link in re.findall(r"\]\(([^)#]+)\)", readme):
        if not link.startswith(("http://", "https://")):
            assert (ROOT / link).exists(), f"README links {link}, which is not in the repository"
