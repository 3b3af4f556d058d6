"""`peftlab runs submit|list|logs|download` against a real server and worker, as a user at a terminal would
run them: a config file exported from one run starts another, logs follow it to the end, the zip downloads."""
import os
import re
import subprocess
import sys
import zipfile

import httpx
import pytest
import yaml

from tests.conftest import ROOT
from tests.integration.test_end_to_end import sentiment_csv

pytestmark = [pytest.mark.integration, pytest.mark.backend_neutral]


def peftlab(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PEFTLAB_URL") and k != "PEFTLAB_TOKEN"}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**clean, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def server(live_stack, tiny_bert_source, admin_account):
    with httpx.Client(base_url=live_stack.url, headers=live_stack.headers, timeout=60) as api:
        model = api.post("/api/models", json={"name": "tiny bert cli", "source": tiny_bert_source}).json()
        ds = api.post("/api/datasets", files={"file": ("cli.csv", sentiment_csv(64))}).json()
    return {"url": live_stack.url, "token": admin_account.token, "model": model["id"], "dataset": ds["id"]}


def test_submit_list_follow_and_download(server, tmp_path):
    config = {"name": "from the cli", "dataset_id": server["dataset"], "base_model": server["model"],
              "task": "classification", "eval_fraction": 0.25, "columns": {"text": "review", "label": "sentiment"},
              "method": {"type": "lora", "r": 4}, "training": {"learning_rate": 0.01, "max_steps": 6,
                                                               "batch_size": 16, "eval_every": 3}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    flags = ["--url", server["url"], "--token", server["token"]]
    res = peftlab("runs", "submit", str(path), *flags)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("queued run ") and f"{server['url']}/runs/" in res.stdout
    run_id = int(res.stdout.split()[2])

    env = {"PEFTLAB_URL": server["url"], "PEFTLAB_TOKEN": server["token"]}  # the environment works as well
    res = peftlab("runs", "list", env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].split()[:2] == ["ID", "STATUS"]
    assert any(line.split()[0] == str(run_id) and line.endswith("from the cli") for line in res.stdout.splitlines())

    res = peftlab("runs", "logs", str(run_id), "--follow", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "train/loss" in res.stdout and "eval/accuracy" in res.stdout
    assert re.search(r"^\d\d:\d\d:\d\d +INFO +workers.training.loop: training 6 steps of 16 examples on cpu$", res.stdout, re.M), res.stdout
    # The run's end is said on a line of its own (the worker's last log lines may follow it).
    assert f"run {run_id} (from the cli): succeeded, 100%" in res.stdout.strip().splitlines()
    followed = [line for line in res.stdout.splitlines() if re.match(r"\d\d:\d\d:\d\d +[A-Z]+ ", line)]
    assert len(followed) == len(set(followed)), "a worker log line was printed twice"

    res = peftlab("runs", "logs", str(run_id), "--tail", "3", "--lines", "0", env=env)  # status and a tail
    assert res.returncode == 0 and len(res.stdout.strip().splitlines()) == 4, res.stdout
    res = peftlab("runs", "logs", str(run_id), "--tail", "0", "--lines", "2", env=env)  # the last worker lines
    assert res.returncode == 0, res.stderr
    logged = httpx.get(f"{server['url']}/api/runs/{run_id}/logs",
                       headers={"Authorization": f"Bearer {server['token']}"}).json()["lines"]
    assert len(logged) > 2 and all(line["message"] in res.stdout for line in logged[-2:])
    assert logged[0]["message"] not in res.stdout, res.stdout

    res = peftlab("runs", "logs", str(run_id), "--worker-log", "--tail", "5", env=env)  # what the worker said
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0] == f"run {run_id} (from the cli): succeeded, 100%", res.stdout
    records = [line for line in lines[1:] if re.match(r"^\d\d:\d\d:\d\d  (DEBUG|INFO|WARNING|ERROR|CRITICAL) ", line)]
    assert 1 <= len(records) <= 5 and "step 6/6" in res.stdout, res.stdout  # the last lines: the final step

    out = tmp_path / "adapter.zip"
    res = peftlab("runs", "download", str(run_id), "-o", str(out), env=env)
    assert res.returncode == 0, res.stderr
    assert {"adapter_config.json", "README.md", "peftlab.json"} <= set(zipfile.ZipFile(out).namelist())

    # The run's exported config starts the same run again from the command line.
    exported = tmp_path / "again.yaml"
    exported.write_text(httpx.get(f"{server['url']}/api/runs/{run_id}/config.yaml",
                                  headers={"Authorization": f"Bearer {server['token']}"}).text)
    res = peftlab("runs", "submit", str(exported), env=env)
    assert res.returncode == 0, res.stderr
    again = int(res.stdout.split()[2])
    run = httpx.get(f"{server['url']}/api/runs/{again}", headers={"Authorization": f"Bearer {server['token']}"}).json()
    assert run["config"]["method"]["r"] == 4 and run["config"]["name"] == "from the cli"
    httpx.post(f"{server['url']}/api/runs/{again}/cancel", headers={"Authorization": f"Bearer {server['token']}"})


def test_refusals_are_one_line_and_exit_1(server, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "dataset_id": server["dataset"], "base_model": server["model"],
                                   "columns": {"text": "review", "label": "sentiment"},
                                   "method": {"type": "lora", "r": 0}}))
    res = peftlab("runs", "submit", str(bad), "--url", server["url"], "--token", server["token"])
    assert res.returncode == 1 and res.stderr.startswith("peftlab: method.lora.r:"), res.stderr
    res = peftlab("runs", "list", "--url", server["url"], "--token", "wrong")
    assert res.returncode == 1 and "not valid" in res.stderr and "Traceback" not in res.stderr
    res = peftlab("runs", "download", "999999", "--url", server["url"], "--token", server["token"])
    assert res.returncode == 1 and "not found" in res.stderr
