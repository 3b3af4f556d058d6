"""`peftlab runs submit|list|logs|download`: the command line as a client of a running server (over HTTP, with
peftlab.client), so it works from any machine that reaches the server: --url / PEFTLAB_URL, --token /
PEFTLAB_TOKEN."""
import argparse
import logging
import sys
import threading
import time
from datetime import datetime

# --follow: how long to wait, after the run's metric stream ended, for its log stream to end (it ends a few
# seconds after the run, once the last lines are out).
LOG_END_SECONDS = 30.0


def _client(args: argparse.Namespace):
    from peftlab.client import Client

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request on the terminal

    return Client(args.url, args.token)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _best(run: dict) -> str:
    evaluation = (run.get("summary") or {}).get("eval") or {}
    for key in ("accuracy", "f1", "perplexity", "loss"):
        if evaluation.get(key) is not None:
            return f"{key} {evaluation[key]:.4g}"
    return ""


def cmd_submit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        run = client.submit(args.config)
        print(f"queued run {run['id']} ({run['name']}): {client.url}/runs/{run['id']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        runs = client.runs(status=args.status, method=args.method, tag=args.tag)[:args.limit]
    rows = [("ID", "STATUS", "PROGRESS", "METHOD", "BASE MODEL", "RESULT", "NAME")]
    rows += [(str(r["id"]), r["status"], f"{100 * (r.get('progress') or 0):.0f}%", r["method"], r["base_model"],
              _best(r), r["name"]) for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return 0


def _print_status(run: dict) -> None:
    line = f"run {run['id']} ({run['name']}): {run['status']}, {100 * (run.get('progress') or 0):.0f}%"
    if run.get("error"):
        line += f": {run['error']}"
    print(line, flush=True)


def _print_log_lines(lines: list[dict]) -> None:
    for line in lines:
        stamp = datetime.fromtimestamp(line["time"]).strftime("%H:%M:%S")
        print(f"{stamp}  {line['level']:<7} {line['message']}", flush=True)


def _worker_log(client, args: argparse.Namespace) -> int:
    """The worker's own log of the run: the last --tail lines, then (--follow) new ones until it ends."""
    run = client.run(args.run_id)
    _print_status(run)
    page = client.worker_log(args.run_id, limit=5000)
    _print_log_lines(page["lines"][-args.tail:] if args.tail else [])
    if args.follow and run["status"] not in ("succeeded", "failed", "cancelled"):
        for line in client.log_events(args.run_id, after=page.get("last_seq") or 0):  # ends after the run's last lines
            _print_log_line(line)
        run = client.run(args.run_id)
        _print_status(run)
    return 0 if run["status"] != "failed" else 1


def _print_log_line(line: dict) -> None:
    _print_log_lines([line])


class _LogFollower(threading.Thread):
    """Prints the run's worker log lines from its log stream beside the metric stream, on a client of its
    own (the main one is busy reading the metric stream)."""

    def __init__(self, args: argparse.Namespace, run_id: int, after: int):
        super().__init__(daemon=True)
        self.args, self.run_id, self.after = args, run_id, after

    def run(self) -> None:
        with _client(self.args) as client:
            try:
                for line in client.log_events(self.run_id, after=self.after):
                    _print_log_line(line)
            except Exception as e:  # noqa: BLE001 — the tail is a convenience; the metric stream goes on
                print(f"(worker log stream stopped: {e})", file=sys.stderr, flush=True)


def cmd_logs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.worker_log:
            return _worker_log(client, args)
        run = client.run(args.run_id)
        _print_status(run)
        series = client.metrics(args.run_id, max_points=5000)
        tail = sorted(((step, name, value) for name, points in series.items() for step, value in points),
                      key=lambda p: (p[0], p[1]))[-args.tail:] if args.tail else []
        for step, name, value in tail:
            print(f"step {int(step):>6}  {name:<22} {_fmt(value)}")
        lines = list(client.log_lines(args.run_id))
        for line in lines[-args.lines:] if args.lines else []:
            _print_log_line(line)
        if args.follow and run["status"] not in ("succeeded", "failed", "cancelled"):
            seen = {(name, step) for step, name, _ in tail}
            follower = _LogFollower(args, args.run_id, lines[-1]["seq"] if lines else 0)
            follower.start()
            for kind, data in client.events(args.run_id):
                if kind == "metric" and (data["name"], data["step"]) not in seen:
                    print(f"step {int(data['step']):>6}  {data['name']:<22} {_fmt(data['value'])}", flush=True)
                elif kind == "status":
                    print(f"status: {data['status']} {100 * (data.get('progress') or 0):.0f}%", flush=True)
            follower.join(LOG_END_SECONDS)  # its stream ends once the worker's last lines are out
            run = client.run(args.run_id)
            _print_status(run)
    return 0 if run["status"] != "failed" else 1


def cmd_download(args: argparse.Namespace) -> int:
    with _client(args) as client:
        started = time.monotonic()
        path = client.download(args.run_id, args.output, kind="merged" if args.merged else "adapter")
    print(f"{path} ({path.stat().st_size:,} bytes in {time.monotonic() - started:.1f} s)")
    return 0


def add_parser(sub) -> None:
    runs = sub.add_parser("runs", help="runs on a peftlab server (over HTTP: --url, --token)")
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--url", default=None, help="the server (default $PEFTLAB_URL, else http://127.0.0.1:8000)")
    server.add_argument("--token", default=None, help="an API token (default $PEFTLAB_TOKEN)")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)

    submit = runs_sub.add_parser("submit", parents=[server], help="queue a run from a YAML (or JSON) config file")
    submit.add_argument("config", help="the file: the body of POST /api/runs, e.g. a run page's config.yaml")
    submit.set_defaults(func=cmd_submit)

    listing = runs_sub.add_parser("list", parents=[server], help="the newest runs")
    listing.add_argument("--status", default=None, choices=["queued", "running", "succeeded", "failed", "cancelled"])
    listing.add_argument("--method", default=None)
    listing.add_argument("--tag", default=None)
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(func=cmd_list)

    logs = runs_sub.add_parser("logs", parents=[server], help="a run's status, latest metrics and worker log lines")
    logs.add_argument("run_id", type=int)
    logs.add_argument("--tail", type=int, default=20, help="how many of the latest metric points (default 20)")
    logs.add_argument("--lines", type=int, default=50, help="how many of the latest worker log lines (default 50)")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing metrics and log lines until the run ends")
    logs.add_argument("--worker-log", action="store_true",
                      help="the worker's log lines of the run instead of its metrics")
    logs.set_defaults(func=cmd_logs)

    download = runs_sub.add_parser("download", parents=[server], help="save a run's adapter (or merged) zip")
    download.add_argument("run_id", type=int)
    download.add_argument("--merged", action="store_true", help="the merged model (LoRA runs) instead")
    download.add_argument("-o", "--output", default=None, help="file name (default peftlab-run-ID-adapter.zip)")
    download.set_defaults(func=cmd_download)


def run_command(args: argparse.Namespace) -> int:
    """Server refusals become one line on stderr and exit status 1, not a traceback."""
    from peftlab.client import ClientError

    try:
        return args.func(args)
    except ClientError as e:
        print(f"peftlab: {e}", file=sys.stderr)
        return 1
