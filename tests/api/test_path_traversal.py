"""Nothing names a file the user chose: traversal attempts on every endpoint that serves or takes one."""
import os

import pytest

TRAVERSALS = ["..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "%252e%252e%252fetc%252fpasswd",
              "..%5C..%5Cwindows%5Cwin.ini", "%2Fetc%2Fpasswd", "1%2F..%2F..%2Fpeftlab.sqlite", "..%00", "%2e%2e"]


def _no_leak(res) -> None:
    assert res.status_code in (404, 405, 422), (res.request.url, res.status_code)
    assert b"root:" not in res.content and b"[fonts]" not in res.content and b"SQLite format" not in res.content


@pytest.mark.parametrize("attempt", TRAVERSALS)
@pytest.mark.parametrize("template", ["/api/runs/{}/adapter", "/api/runs/{}/merged", "/api/runs/{}/predictions",
                                      "/api/runs/{}/artifacts", "/api/datasets/{}/rows", "/api/datasets/{}",
                                      "/runs/{}", "/datasets/{}"])
def test_id_routes_refuse_paths(client, template, attempt):
    _no_leak(client.get(template.format(attempt)))


@pytest.mark.parametrize("path", ["/static/..%2f..%2fapp%2fconfig.py", "/static/%2e%2e/%2e%2e/pyproject.toml",
                                  "/static/..%5c..%5cpyproject.toml", "/static/%252e%252e/pyproject.toml",
                                  "/vendor/uplot/..%2f..%2f..%2fpackage.json", "/vendor/swagger-ui/%2e%2e/%2e%2e/package.json",
                                  "/static//etc/passwd", "/static/css/../../pyproject.toml"])
def test_static_files_stay_inside_their_folders(client, path):
    res = client.get(path)
    assert res.status_code == 404, (path, res.status_code)
    assert b"[project]" not in res.content and b"root:" not in res.content


@pytest.mark.parametrize("filename", ["../../../../tmp/peftlab-evil.csv", "..\\..\\peftlab-evil.csv",
                                      "/tmp/peftlab-evil.csv", "%2e%2e%2fpeftlab-evil.csv", "./.../peftlab-evil.csv"])
def test_upload_file_names_never_become_paths(client, settings, filename):
    # Where the name points, were it a path: /tmp, and the folders above the server's working directory.
    # Other test processes may create files there meanwhile: only a new "evil" entry counts.
    places = ["/tmp", os.path.dirname(os.getcwd()), os.path.dirname(os.path.dirname(os.getcwd()))]
    before = {place: set(os.listdir(place)) for place in places}
    res = client.post("/api/datasets", files={"file": (filename, b"text,label\na,b\nc,d\n")})
    assert res.status_code == 201, res.text
    assert "/" not in res.json()["name"] and "\\" not in res.json()["name"]
    for place in places:
        assert not [n for n in set(os.listdir(place)) - before[place] if "evil" in n], place
    stored = [p for p in settings.upload_dir.iterdir() if p.is_file()]
    assert all(p.parent == settings.upload_dir for p in stored)
    assert not any("evil" in p.name for p in stored)  # stored under a name the server chose


@pytest.mark.parametrize("source", ["../../etc", "/etc", "/tmp/../etc", "{allowed}/../..", "{allowed}/%2e%2e/%2e%2e",
                                    "C:\\Windows\\System32", "\\\\server\\share", "{allowed}\\..\\..", "~/models",
                                    "https://example.com/model", "file:///etc", "org/../../etc", "{link}"])
def test_model_registration_stays_inside_allowed_directories(client, settings, tmp_path_factory, source):
    allowed = settings.allowed_model_dirs[-1]
    link = allowed / "escape-link"
    if not link.exists():
        link.symlink_to("/etc")  # a symlink inside an allowed dir pointing out of it
    res = client.post("/api/models", json={"name": "evil", "source": source.format(allowed=allowed, link=link)})
    assert res.status_code == 422, (source, res.status_code, res.text)
    assert all(m["source"] != "/etc" for m in client.get("/api/models").json())
