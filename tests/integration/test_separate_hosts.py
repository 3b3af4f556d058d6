"""Two servers and two workers as on four hosts: each process in a network namespace of its own (`ip netns`
+ a veth pair to this machine's namespace), sharing only PostgreSQL, Redis and the object store, which it
reaches at this machine's end of its veth pair (a TCP forwarder in front of each, since they listen on
127.0.0.1). No process shares a data, artifact or cache folder with another, and none can reach another's
localhost: what works here does not lean on one host.

- 10 runs submitted through both servers finish, on both workers; each adapter downloads from the
  server that did not take the run.
- A client watches a live run through server A, loses A and reconnects to B with Last-Event-ID: B goes
  on without a gap or a repeat. A second client on B sees the points as they are written: the servers'
  safety poll is a minute, so only the workers' announcements (Redis pub/sub) can wake B's streams in time.

Needs root (network namespaces) and the PostgreSQL + Redis configuration (PEFTLAB_TEST_DATABASE_URL and
PEFTLAB_TEST_BROKER_URL, as CI's second pass sets): skipped otherwise, with the reason.
"""
import asyncio
import io
import json
import os
import shutil
import subprocess
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import wait_worker_ready
from tests.integration.private_stack import PrivateStack, TcpProxy, prepare_stack, wait_until_answering
from tests.integration.test_end_to_end import sentiment_csv
from tests.integration.test_live_streams import Stream
from tests.s3_server import s3_server  # noqa: F401 — fixture

pytestmark = pytest.mark.integration

SAFETY_POLL_SECONDS = 60  # far longer than a run here: a stream that gets points in time was woken by pub/sub
HOSTS = ("server-a", "server-b", "worker-1", "worker-2")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Host:
    """A network namespace joined to this machine's by a veth pair: this side `gateway`, that side `address`."""

    name: str
    namespace: str
    gateway: str
    address: str

    @property
    def prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.namespace)


def _make_hosts(tag: str) -> list[Host]:
    subnet = 100 + int(tag, 16) % 100  # 10.<subnet>.<i>.0/24: unlikely to meet another session's
    hosts = []
    try:
        for i, name in enumerate(HOSTS, start=1):
            host = Host(name, f"pl-{tag}-{i}", f"10.{subnet}.{i}.1", f"10.{subnet}.{i}.2")
            outer, inner = f"pl{tag}{i}o", f"pl{tag}{i}i"
            _ip("netns", "add", host.namespace)
            hosts.append(host)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", host.namespace)
            _ip("addr", "add", f"{host.gateway}/24", "dev", outer)
            _ip("link", "set", outer, "up")
            for args in (("addr", "add", f"{host.address}/24", "dev", inner), ("link", "set", inner, "up"),
                         ("link", "set", "lo", "up")):
                _ip("netns", "exec", host.namespace, "ip", *args)
    except BaseException:
        _remove_hosts(hosts)
        raise
    return hosts


def _remove_hosts(hosts: list[Host]) -> None:
    for host in hosts:  # deleting a namespace deletes its end of the veth pair, and so the pair
        subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True, timeout=30)


def _requirements() -> str | None:
    if not (os.environ.get("PEFTLAB_TEST_DATABASE_URL") and os.environ.get("PEFTLAB_TEST_BROKER_URL")):
        return "separate hosts share PostgreSQL and Redis: set PEFTLAB_TEST_DATABASE_URL and PEFTLAB_TEST_BROKER_URL"
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "network namespaces need root and iproute2's `ip`"
    probe = f"pl-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if made.returncode != 0:
        return f"cannot make a network namespace here: {made.stderr.strip()}"
    return None


@dataclass
class Deployment:
    stack: PrivateStack  # the database, admin token and log folder; its processes are the four below
    servers: dict[str, str]  # host name → base URL
    workers: dict[int, str]  # pid → host name

    def client(self, server: str) -> httpx.Client:
        return httpx.Client(base_url=self.servers[server], headers=self.stack.headers, timeout=60, trust_env=False)


@pytest.fixture(scope="module")
def deployment(s3_server, tmp_path_factory, tiny_bert_source):
    if reason := _requirements():
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("separate-hosts")
    bucket = s3_server.new_bucket()
    stack = prepare_stack(root / "setup", [str(Path(tiny_bert_source).parent)])
    tag = uuid.uuid4().hex[:5]
    database, broker = sa.engine.make_url(stack.db_url), urlsplit(stack.env["PEFTLAB_BROKER_URL"])
    store = urlsplit(s3_server.endpoint)
    # What the hosts share, each behind a forwarder that listens on every address of this machine.
    proxies = {"database": TcpProxy(database.host, database.port or 5432, bind="0.0.0.0"),
               "broker": TcpProxy(broker.hostname, broker.port or 6379, bind="0.0.0.0"),
               "store": TcpProxy(store.hostname, store.port, bind="0.0.0.0")}
    hosts = _make_hosts(tag)
    secret = uuid.uuid4().hex  # what every host must share besides the backends (README, "Scale out")
    try:
        servers, workers = {}, {}
        for host in hosts:
            own = root / host.name  # its disk: nobody else's folders
            env = {**stack.env, **s3_server.env,
                   "PEFTLAB_DATABASE_URL": database.set(host=host.gateway, port=proxies["database"].port)
                   .render_as_string(hide_password=False),
                   "PEFTLAB_BROKER_URL": f"redis://{host.gateway}:{proxies['broker'].port}{broker.path}",
                   "AWS_ENDPOINT_URL": f"http://{host.gateway}:{proxies['store'].port}",
                   "PEFTLAB_STORAGE_URL": f"s3://{bucket}/peftlab", "PEFTLAB_DATA_DIR": str(own / "data"),
                   "PEFTLAB_ARTIFACT_DIR": str(own / "artifacts"), "PEFTLAB_STORAGE_CACHE_DIR": str(own / "cache"),
                   "PEFTLAB_SECRET_KEY": secret, "PEFTLAB_SSE_POLL_SECONDS": str(SAFETY_POLL_SECONDS),
                   "OMP_NUM_THREADS": "1"}
            if host.name.startswith("server"):
                proc = stack.spawn(host.name, "serve", "--host", host.address, "--port", "8000", env=env,
                                   prefix=host.prefix)
                servers[host.name] = f"http://{host.address}:8000"
            else:
                proc = stack.spawn(host.name, "worker", "--loglevel", "INFO", env=env, prefix=host.prefix)
                workers[proc.pid] = host.name
            stack.workers.append(proc)  # stopped with the stack
        for host in hosts:
            proc = next(p for p in stack.workers if Path(p.log_path).stem == host.name)
            if host.name.startswith("server"):
                wait_until_answering(servers[host.name], proc)
            else:
                wait_worker_ready(proc, timeout=300)  # torch imports slowly on a busy machine
        yield Deployment(stack, servers, workers)
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.close()
        _remove_hosts(hosts)
        for proxy in proxies.values():
            proxy.close()


def _run_body(dataset_id: int, model_id: str, name: str, **training) -> dict:
    return {"name": name, "dataset_id": dataset_id, "base_model": model_id, "task": "classification",
            "eval_fraction": 0.25, "columns": {"text": "review", "label": "sentiment"},
            "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
            "training": {"learning_rate": 0.01, "batch_size": 8, "seed": 1, **training}}


@pytest.fixture(scope="module")
def inputs(deployment, tiny_bert_source, tmp_path_factory) -> tuple[int, str, str]:
    """(dataset id, model id, a slower model's id): the models registered through A, the dataset uploaded
    through B. The slower one (tens of milliseconds a step) trains long enough to be watched."""
    from tests.tiny_models import make_tiny_bert

    slow = make_tiny_bert(tmp_path_factory.mktemp("slow-bert"), hidden=64, layers=2, heads=4)  # a model dir
    with deployment.client("server-a") as a:
        models = [a.post("/api/models", json={"name": name, "source": str(source)})
                  for name, source in (("tiny bert", tiny_bert_source), ("slow bert", slow))]
        assert [m.status_code for m in models] == [201, 201], [m.text for m in models]
    with deployment.client("server-b") as b:
        ds = b.post("/api/datasets", files={"file": ("reviews.csv", sentiment_csv(120))})
        assert ds.status_code == 201, ds.text
    return ds.json()["id"], models[0].json()["id"], models[1].json()["id"]


def _wait_ended(client: httpx.Client, run_ids: list[int], timeout: float = 300) -> list[dict]:
    deadline = time.time() + timeout
    while True:
        runs = [client.get(f"/api/runs/{i}").json() for i in run_ids]
        if all(r["status"] in ("succeeded", "failed", "cancelled") for r in runs):
            return runs
        assert time.time() < deadline, [(r["id"], r["status"]) for r in runs]
        time.sleep(0.5)


def test_runs_submitted_through_both_servers_finish_on_both_workers(deployment, inputs):
    dataset_id, model_id, _ = inputs
    submitted: dict[int, str] = {}
    for i in range(10):
        server = ("server-a", "server-b")[i % 2]
        with deployment.client(server) as c:
            res = c.post("/api/runs", json=_run_body(dataset_id, model_id, f"run {i} via {server}", max_steps=12))
            assert res.status_code == 201, res.text
            submitted[res.json()["id"]] = server
    with deployment.client("server-a") as a:
        runs = _wait_ended(a, list(submitted))
    assert [r["status"] for r in runs] == ["succeeded"] * 10, [(r["id"], r["status"], r["error"]) for r in runs]
    with deployment.stack.engine().connect() as conn:
        took = dict(conn.execute(sa.text("SELECT id, worker FROM runs WHERE id IN :ids")
                                 .bindparams(sa.bindparam("ids", expanding=True)), {"ids": list(submitted)}).all())
    hosts = {run_id: deployment.workers.get(int(worker.rsplit(":", 1)[1])) for run_id, worker in took.items()}
    assert set(hosts.values()) == {"worker-1", "worker-2"}, hosts
    for run_id, server in submitted.items():
        other = "server-b" if server == "server-a" else "server-a"
        with deployment.client(other) as c:
            adapter = c.get(f"/api/runs/{run_id}/adapter")
            assert adapter.status_code == 200, adapter.text
            assert "adapter_model.safetensors" in zipfile.ZipFile(io.BytesIO(adapter.content)).namelist()


async def _watch_a_run_across_servers(deployment: Deployment, run_id: int) -> tuple[Stream, Stream, Stream]:
    """(the client's stream through A, its reconnection through B, the other client's stream on B)."""
    def client(server: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=deployment.servers[server], headers=deployment.stack.headers,
                                 timeout=httpx.Timeout(120.0, connect=10.0), trust_env=False)

    async def until(condition, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            await asyncio.sleep(0.05)

    def metrics(stream: Stream) -> list[dict]:
        return [e for e in stream.events if e["event"] == "metric"]

    async with client("server-a") as a, client("server-b") as b:
        through_a = Stream(a, run_id)
        await until(lambda: len(metrics(through_a)) >= 3, "points reach the stream through A")
        watcher_b = Stream(b, run_id)  # a second client, on B from here on
        await until(lambda: len(metrics(through_a)) >= 10, "more points reach A")
        through_a.task.cancel()  # A is lost: the client reconnects, and the balancer sends it to B
        await asyncio.gather(through_a.task, return_exceptions=True)
        last_id = through_a.events[-1]["id"]
        resumed = Stream(b, run_id, last_event_id=last_id)
        await asyncio.wait_for(asyncio.gather(resumed.ended.wait(), watcher_b.ended.wait()), 300)
    return through_a, resumed, watcher_b


def test_a_run_watched_through_one_server_streams_on_the_other(deployment, inputs):
    dataset_id, _, slow_model_id = inputs
    # Long enough to watch for a while on any machine: a budget of seconds (the worker flushes its points
    # about once a second).
    body = _run_body(dataset_id, slow_model_id, "watched across servers", max_steps=100_000, max_seconds=15,
                     eval_every=200)
    with deployment.client("server-a") as a:
        res = a.post("/api/runs", json=body)
        assert res.status_code == 201, res.text
        run_id = res.json()["id"]
        through_a, resumed, watcher_b = asyncio.run(_watch_a_run_across_servers(deployment, run_id))
        run = a.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "succeeded", run
    assert resumed.status_code == watcher_b.status_code == 200
    with deployment.stack.engine().connect() as conn:
        stored = conn.execute(sa.text("SELECT name, step, value FROM metrics WHERE run_id = :r ORDER BY id"),
                              {"r": run_id}).all()

    def points(*streams: Stream) -> list[tuple]:
        return [(d["name"], d["step"], d["value"]) for s in streams for e in s.events if e["event"] == "metric"
                for d in [json.loads(e["data"])]]

    # The reconnection through B starts where A's stream stopped: together they are every point once.
    assert points(through_a, resumed) == [tuple(r) for r in stored]
    assert points(watcher_b) == [tuple(r) for r in stored]
    # B's own client got points while the run was still training, each soon after it was written: the
    # worker's announcement reached B (its safety poll would take a minute).
    ended_at = next(e["at"] for e in watcher_b.events if e["event"] == "status"
                    and json.loads(e["data"])["status"] in ("succeeded", "failed", "cancelled"))
    live = [(e["at"], json.loads(e["data"])["time"]) for e in watcher_b.events
            if e["event"] == "metric" and e["at"] < ended_at - 1.0 and e["at"] > watcher_b.events[0]["at"] + 1.0]
    assert len(live) >= 20, f"only {len(live)} points arrived at B while the run trained"
    lags = sorted(at - written for at, written in live)
    assert lags[len(lags) // 2] < 5.0, f"median lag from the worker's point to B's client: {lags[len(lags) // 2]:.1f} s"
