"""docker-compose.yml describes a deployment the CLI can actually run (no Docker engine here)."""
from pathlib import Path

import yaml

from app.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _peftlab_commands(compose: dict) -> list[list[str]]:
    return [svc["command"] for svc in compose["services"].values()
            if isinstance(svc.get("command"), list) and svc["command"][0] == "peftlab"]


def test_every_peftlab_command_in_compose_parses_with_the_cli():
    commands = _peftlab_commands(_compose())
    assert {c[1] for c in commands} >= {"serve", "worker", "db"}
    parser = build_parser()
    for command in commands:
        args = parser.parse_args(command[1:])  # raises SystemExit on an unknown command or option
        assert callable(args.func)


def test_services_are_wired_for_scale_out():
    services = _compose()["services"]
    assert {"postgres", "redis", "server", "worker-gpu0", "worker-predict"} <= set(services)
    for name in ("postgres", "redis", "server", "worker-gpu0", "worker-predict"):
        assert "healthcheck" in services[name], f"{name} has no health check"
    for name in ("server", "worker-gpu0", "worker-predict"):
        env = services[name]["environment"]
        assert env["PEFTLAB_SECRET_KEY"].startswith("${PEFTLAB_SECRET_KEY")  # shared by all, never a default
        assert env["PEFTLAB_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["PEFTLAB_BROKER_URL"].startswith("redis://")
        assert any(v.startswith("artifacts:") for v in services[name]["volumes"])
    gpu = services["worker-gpu0"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["device_ids"] == ["0"]
    assert services["worker-gpu0"]["command"][2:] == ["--gpus", "0", "--queues", "train"]
    assert services["worker-predict"]["command"][2:] == ["--queues", "predict"]
    assert services["server"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
