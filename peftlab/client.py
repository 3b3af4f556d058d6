"""A small HTTP client of a peftlab server, for scripts and for the `peftlab runs …` commands.

    from peftlab.client import Client
    with Client("http://127.0.0.1:8000", token="plt_…") as client:     # or Client() with PEFTLAB_URL / PEFTLAB_TOKEN
        run = client.submit("config.yaml")                              # a path, YAML text or a dict
        for event in client.events(run["id"]):                          # ("metric" | "status", data) until it ends
            print(event)
        client.download(run["id"], "adapter.zip")

Talks only HTTP (httpx); imports neither the server nor torch.
"""
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

DEFAULT_URL = "http://127.0.0.1:8000"
FINISHED = ("succeeded", "failed", "cancelled")


class ClientError(RuntimeError):
    """The server said no (4xx/5xx) or could not be reached; the message is the server's."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _detail(res: httpx.Response) -> str:
    try:
        detail = res.json().get("detail")
    except (ValueError, AttributeError):
        return f"HTTP {res.status_code}: {res.text[:300]}"
    if isinstance(detail, list):  # FastAPI's 422: [{loc, msg}]
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []) if p != 'body')}: {d.get('msg')}".lstrip(": ")
                         for d in detail)
    return str(detail)


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60.0):
        self.url = (url or os.environ.get("PEFTLAB_URL") or DEFAULT_URL).rstrip("/")
        token = token or os.environ.get("PEFTLAB_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            res = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise ClientError(f"cannot reach peftlab at {self.url}: {e}") from None
        if res.status_code >= 400:
            raise ClientError(_detail(res), res.status_code)
        return res

    # runs -------------------------------------------------------------------------------------

    def submit(self, config: dict | str | Path) -> dict:
        """Queue a run from a config dict, a YAML/JSON file's path, or YAML text. Returns the run."""
        if isinstance(config, Path) or (isinstance(config, str) and "\n" not in config and Path(config).is_file()):
            config = Path(config).read_text(encoding="utf-8")
        if isinstance(config, str):
            try:
                config = yaml.safe_load(config)
            except yaml.YAMLError as e:
                raise ClientError(f"the config is not valid YAML: {e}") from None
        if not isinstance(config, dict):
            raise ClientError("the config must be a mapping (name:, dataset_id:, method:, …)")
        return self._request("POST", "/api/runs", json=config).json()

    def runs(self, **filters) -> list[dict]:
        """GET /api/runs with its filters (status, method, dataset_id, base_model, tag, sort, order)."""
        params = {k: v for k, v in filters.items() if v is not None}
        return self._request("GET", "/api/runs", params=params).json()

    def run(self, run_id: int) -> dict:
        return self._request("GET", f"/api/runs/{int(run_id)}").json()

    def metrics(self, run_id: int, names: list[str] | None = None, max_points: int = 1000) -> dict:
        params = {"max_points": max_points, **({"names": ",".join(names)} if names else {})}
        return self._request("GET", f"/api/runs/{int(run_id)}/metrics", params=params).json()["series"]

    def worker_log(self, run_id: int, after: int = 0, limit: int = 1000) -> dict:
        """What the worker logged while training the run: {lines: [{seq, time, level, message}], last_seq}."""
        return self._request("GET", f"/api/runs/{int(run_id)}/logs", params={"after": after, "limit": limit}).json()

    def log_lines(self, run_id: int, after: int = 0) -> Iterator[dict]:
        """Every worker log line of the run with a seq above `after`, oldest first, page by page."""
        while True:
            page = self.worker_log(run_id, after=after)
            yield from page["lines"]
            if not page["lines"]:
                return
            after = page["last_seq"]

    def config_yaml(self, run_id: int) -> str:
        return self._request("GET", f"/api/runs/{int(run_id)}/config.yaml").text

    def _sse(self, path: str, last_event_id: str | None, params: dict | None = None) -> Iterator[tuple[str, dict, str | None]]:
        """One Server-Sent Events connection: (event, data, id) until the server closes it. Error answers
        raise ClientError; a dropped connection raises httpx.TransportError."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        kind, data, event_id = None, [], None
        with self._http.stream("GET", path, headers=headers, params=params,
                               timeout=httpx.Timeout(30.0, read=None)) as res:
            if res.status_code >= 400:
                res.read()
                raise ClientError(_detail(res), res.status_code)
            for line in res.iter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line.startswith("id:"):
                    event_id = line[3:].strip()
                elif not line and kind:
                    yield kind, json.loads("\n".join(data)) if data else {}, event_id
                    kind, data, event_id = None, [], None

    def events(self, run_id: int, last_event_id: str | None = None) -> Iterator[tuple[str, dict]]:
        """The run's live events, ("metric", {name, step, value, time}) or ("status", {status, progress}),
        until its status is final. Reconnects with Last-Event-ID when the stream drops."""
        while True:
            try:
                for kind, payload, event_id in self._sse(f"/api/runs/{int(run_id)}/events", last_event_id):
                    last_event_id = event_id or last_event_id
                    yield kind, payload
                    if kind == "status" and payload.get("status") in FINISHED:
                        return
            except httpx.TransportError:
                pass  # the connection dropped: resume after the last event seen
            if self.run(run_id)["status"] in FINISHED:
                return

    def log_events(self, run_id: int, after: int = 0) -> Iterator[dict]:
        """The run's worker log lines {seq, time, level, message} with a seq above `after`, as they are
        written, until the run has ended and its last lines are out. Reconnects after the last line seen
        when the stream drops."""
        last = str(after)
        while True:
            try:
                for kind, payload, event_id in self._sse(f"/api/runs/{int(run_id)}/logs/events", last):
                    if kind == "end":
                        return
                    if kind == "log":
                        last = event_id or last
                        yield payload
                return  # closed without `end`: the token was revoked or the run deleted
            except httpx.TransportError:
                continue  # the connection dropped: resume after the last line seen

    def download(self, run_id: int, dest: str | Path | None = None, kind: str = "adapter") -> Path:
        """The run's adapter (or merged model) zip, streamed to dest (default: the server's file name)."""
        path = f"/api/runs/{int(run_id)}/{'merged' if kind == 'merged' else 'adapter'}"
        try:
            # A server set to PEFTLAB_STORAGE_PRESIGNED_DOWNLOADS answers 307 to the object store (httpx drops
            # the token on the way: another origin).
            with self._http.stream("GET", path, follow_redirects=True) as res:
                if res.status_code >= 400:
                    res.read()
                    raise ClientError(_detail(res), res.status_code)
                target = Path(dest) if dest else Path(f"peftlab-run-{int(run_id)}-{kind}.zip")
                partial = target.with_name(target.name + ".part")
                with open(partial, "wb") as f:
                    for chunk in res.iter_bytes():
                        f.write(chunk)
                partial.replace(target)  # never a half-written zip under the final name
                return target
        except httpx.HTTPError as e:
            raise ClientError(f"cannot reach peftlab at {self.url}: {e}") from None
