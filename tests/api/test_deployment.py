"""docker-compose.yml describes a deployment the CLI can actually run: two server replicas behind nginx,
PostgreSQL, Redis, MinIO and workers, every peftlab service on the same settings, every long-running
service with a health check that can pass. `docker compose config` checks it too where Docker is."""
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from app.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
# What every server and worker must agree on (README "Scale out").
SHARED = ("PEFTLAB_DATABASE_URL", "PEFTLAB_BROKER_URL", "PEFTLAB_SECRET_KEY", "PEFTLAB_STORAGE_URL", "PEFTLAB_DATA_DIR",
          "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
ONE_SHOT = {"migrate", "minio-bucket"}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _peftlab_services(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items()
            if isinstance(svc.get("command"), list) and svc["command"][0] == "peftlab"}


def test_every_peftlab_command_in_compose_parses_with_the_cli():
    commands = [svc["command"] for svc in _peftlab_services(_compose()).values()]
    assert {c[1] for c in commands} >= {"serve", "worker", "db"}
    parser = build_parser()
    for command in commands:
        args = parser.parse_args(command[1:])  # raises SystemExit on an unknown command or option
        assert callable(args.func)


def test_two_servers_behind_a_proxy_with_postgres_redis_minio_and_workers():
    services = _compose()["services"]
    assert {"postgres", "redis", "minio", "minio-bucket", "migrate", "server-1", "server-2", "proxy",
            "worker-1", "worker-2", "worker-predict", "worker-gpu0"} <= set(services)
    for name in ("server-1", "server-2"):
        assert services[name]["command"][1] == "serve"
    workers = [n for n, s in _peftlab_services(_compose()).items() if s["command"][1] == "worker" and not s.get("profiles")]
    assert sum("train" in services[n]["command"][-1] for n in workers) >= 2  # two training workers on the CPU
    assert services["worker-predict"]["command"][2:] == ["--queues", "predict"]
    # The GPU worker is opt-in (a profile), with its device reserved.
    gpu_worker = services["worker-gpu0"]
    assert gpu_worker["profiles"] == ["gpu"]
    assert gpu_worker["command"][2:] == ["--gpus", "0", "--queues", "train"]
    gpu = gpu_worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["device_ids"] == ["0"]


def test_every_peftlab_service_shares_the_settings_that_must_match():
    services = _peftlab_services(_compose())
    for key in SHARED:
        values = {name: svc["environment"].get(key) for name, svc in services.items()}
        assert len(set(values.values())) == 1 and None not in values.values(), f"{key} differs: {values}"
    env = next(iter(services.values()))["environment"]
    assert env["PEFTLAB_SECRET_KEY"].startswith("${PEFTLAB_SECRET_KEY:?")  # required, never a default
    assert env["PEFTLAB_DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:5432/" in env["PEFTLAB_DATABASE_URL"]
    assert env["PEFTLAB_BROKER_URL"].startswith("redis://") and "@redis:6379/" in env["PEFTLAB_BROKER_URL"]
    assert env["PEFTLAB_STORAGE_URL"].startswith("s3://") and env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    for name, svc in services.items():  # uploads and the tokenized cache: one shared volume
        if name != "migrate":
            assert "data:/data" in svc["volumes"], name


def test_dependencies_exist_and_wait_for_health_or_completion():
    compose = _compose()
    services = compose["services"]
    for name, svc in services.items():
        if name not in ONE_SHOT:
            assert "healthcheck" in svc, f"{name} has no health check"
        for dep, how in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no check"
            else:
                assert how["condition"] == "service_completed_successfully" and dep in ONE_SHOT
        for volume in svc.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"], f"{name}: unknown volume {volume}"
    for name in ("server-1", "server-2"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["proxy"]["depends_on"] == {"server-1": {"condition": "service_healthy"},
                                               "server-2": {"condition": "service_healthy"}}


def test_the_proxy_spreads_over_both_servers_streams_unbuffered_and_is_the_only_trusted_proxy():
    compose = _compose()
    proxy = compose["services"]["proxy"]
    (mount,) = proxy["configs"]
    conf = compose["configs"][mount["source"]]["content"]
    upstream = re.search(r"upstream peftlab \{(.*?)\}", conf, re.S).group(1)
    assert re.findall(r"server (\S+):8000", upstream) == ["server-1", "server-2"]
    assert "proxy_pass http://peftlab;" in conf
    for directive in ("proxy_buffering off;", "proxy_request_buffering off;", "proxy_cache off;"):
        assert directive in conf  # SSE events and uploads pass through as they come
    assert "proxy_read_timeout 1h;" in conf
    # Compose substitutes $name: nginx's variables must be written $$name.
    assert not re.search(r"(?<!\$)\$(?!\$)", conf.replace("$$", "")), "an unescaped $ in the nginx config"
    assert "$$proxy_add_x_forwarded_for" in conf
    # Only nginx's fixed address is trusted for X-Forwarded-For, and it is inside the network's subnet.
    address = proxy["networks"]["default"]["ipv4_address"]
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
    for name in ("server-1", "server-2"):
        assert json.loads(compose["services"][name]["environment"]["PEFTLAB_TRUSTED_PROXIES"]) == [address]


def _python_check(svc: dict) -> str:
    test = svc["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    return test[3]


def test_the_worker_health_check_passes_only_for_a_worker_that_reported_itself(peftlab_env):
    """The check runs for real against the test database: a worker row for this host seen lately → healthy."""
    from app.db import session_scope, utcnow
    from app.worker_status.models import Worker

    code = _python_check(_compose()["services"]["worker-1"])
    host = "compose-health-check-host"

    def check() -> int:
        env = {**os.environ, "HOSTNAME": host, "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, timeout=120).returncode

    with session_scope() as session:
        session.add(Worker(name=f"{host}:1", device={"kind": "cpu", "name": "test"}, memory_bytes=1,
                           last_seen=utcnow() - timedelta(minutes=5)))
    try:
        assert check() == 1  # seen 5 minutes ago: gone
        with session_scope() as session:
            session.get(Worker, f"{host}:1").last_seen = utcnow()
        assert check() == 0
    finally:
        with session_scope() as session:
            session.delete(session.get(Worker, f"{host}:1"))


def test_the_server_health_check_asks_a_public_page():
    code = _python_check(_compose()["services"]["server-1"])
    compile(code, "healthcheck", "exec")
    assert "http://127.0.0.1:8000/login" in code  # public and reads the database (/api/* answers 401)


def _docker_compose() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) and subprocess.run([*command, "version"], capture_output=True).returncode == 0:
            return command
    return None


@pytest.mark.skipif(_docker_compose() is None, reason="no docker compose here; the tests above check the file")
def test_docker_compose_accepts_the_file():
    res = subprocess.run([*_docker_compose(), "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
                         env={**os.environ, "PEFTLAB_SECRET_KEY": "test"}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
