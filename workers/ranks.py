"""A run on several processes of one host (training.gpus > 1), started with torchrun.

The worker (`launch`, in its Celery task) has claimed the run. It starts
`python -m torch.distributed.run --standalone --nproc-per-node N -m workers.ranks …` and renews the
lease only until rank 0 has taken it over (rank 0 creates a file in the run's scratch directory), so
a run whose processes are slow to start is not given away meanwhile. Then it waits.

The ranks (`main`, one process each):
- rank 0 does what a one-process worker does: holds and renews the lease (its heartbeat sees a cancel
  or a lost lease), reports the metrics, writes the checkpoints and the outputs, sets the final status;
- the others train their share of each batch and write nothing. Rank 0's stop request reaches them
  through the collective every step (workers/training/distributed.py), so a cancel or a lost lease
  stops every rank after the same step.
A rank that fails writes its reason into the scratch directory and exits; torchrun then ends the
others, and the worker fails the run with the first rank's reason. Every rank watches the worker
process: when it is gone (killed), the ranks exit, the lease runs out and the reaper recovers the run
as it does any dead worker's.
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from app.artifacts.service import delete_for_run, run_dir
from app.config import Settings, get_settings
from app.db import session_scope
from app.runs.lifecycle import Lease, finish
from app.runs.models import Run
from workers.training.reporting import LeaseKeeper, LeaseLost

log = logging.getLogger(__name__)

HOLDING = "rank0-holds-the-lease"
WORKER_PID = "PEFTLAB_WORKER_PID"


# ---- the worker's side ------------------------------------------------------------------------------

def launch(lease: Lease, processes: int, settings: Settings) -> None:
    """Train the claimed run as `processes` ranks; returns when they have all ended."""
    with session_scope() as session:
        run = session.get(Run, lease.run_id)
        strategy = ((run.config or {}).get("training") or {}).get("distributed", "ddp") if run else "ddp"
    with tempfile.TemporaryDirectory(prefix=f"peftlab-run-{lease.run_id}-") as scratch_dir:
        scratch = Path(scratch_dir)
        keeper: LeaseKeeper | None = LeaseKeeper(lease, settings.lease_seconds, settings.heartbeat_seconds).start()
        root = str(Path(__file__).resolve().parent.parent)  # the ranks import this very copy of the project
        env = dict(os.environ, **{WORKER_PID: str(os.getpid())},
                   PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   "--max-restarts=0", "-m", "workers.ranks", "--run-id", str(lease.run_id), "--worker", lease.worker,
                   "--attempt", str(lease.attempt), "--claimed-at", repr(time.time()), "--scratch", str(scratch),
                   "--distributed", strategy]
        log.info("run %s: starting %d processes (%s)", lease.run_id, processes, strategy)
        proc = subprocess.Popen(command, env=env)
        try:
            while True:
                try:
                    proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if keeper is not None and (scratch / HOLDING).exists():
                    keeper.close()  # rank 0 renews it from now on
                    keeper = None
                elif keeper is not None and keeper.lost.is_set():
                    log.warning("run %s: lease lost before rank 0 started; stopping its processes", lease.run_id)
                    proc.terminate()
        finally:
            if keeper is not None:
                keeper.close()
            if proc.poll() is None:  # the worker itself is being stopped
                proc.terminate()
                proc.wait()
        if proc.returncode != 0:
            _fail(lease, scratch, proc.returncode, settings)


def _fail(lease: Lease, scratch: Path, code: int, settings: Settings) -> None:
    """The first failing rank's reason (a rank ended by torchrun after another failed writes none)."""
    reports = []
    for path in scratch.glob("rank-*.json"):
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    first = min(reports, key=lambda r: r["time"]) if reports else None
    error = first["error"] if first else f"the run's training processes exited with code {code}"
    if first and first["rank"] != 0:
        error = f"rank {first['rank']}: {error}"[:500]
    with session_scope() as session:
        # Guarded by the attempt: a run rank 0 already ended (or that was given away) is left as it is.
        if finish(session, lease.run_id, lease.worker, "failed", error=error,
                  traceback=first["traceback"] if first else None, attempt=lease.attempt):
            log.warning("run %s failed: %s", lease.run_id, error)
            delete_for_run(session, settings=settings, run_id=lease.run_id)


# ---- the ranks' side --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workers.ranks")
    parser.add_argument("--run-id", type=int, required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--attempt", type=int, required=True)
    parser.add_argument("--claimed-at", type=float, required=True)
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--distributed", choices=("ddp", "fsdp"), default="ddp")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s rank {rank} %(name)s: %(message)s")
    _watch_worker(int(os.environ[WORKER_PID]))

    from workers.training.distributed import Ranks

    ranks = None
    try:
        ranks = Ranks(args.distributed)
        if ranks.main:
            _lead(args, ranks)
        else:
            _follow(args, ranks)
    except BaseException as e:
        from workers.tasks import failure_reason

        report = {"rank": rank, "time": time.time(), "error": failure_reason(e), "traceback": traceback.format_exc()}
        (args.scratch / f"rank-{rank}.json").write_text(json.dumps(report))
        raise
    ranks.close()
    return 0


def _lead(args: argparse.Namespace, ranks) -> None:
    """Rank 0: the one-process worker's part of workers.tasks.train_run, with the other ranks beside it."""
    from workers import tasks
    from workers.training.log_capture import RunLogCapture
    from workers.training.reporting import SqlReporter

    settings = get_settings()
    lease = Lease(args.run_id, args.worker, args.attempt)
    keeper = LeaseKeeper(lease, settings.lease_seconds, settings.heartbeat_seconds).start()
    (args.scratch / HOLDING).touch()
    logs = RunLogCapture(lease.run_id).start()
    started = time.perf_counter() - (time.time() - args.claimed_at)  # the claim, on this process's clock
    try:
        reporter = SqlReporter(lease, keeper)
        reporter.on_flush.append(logs.write)
        tasks._save(lease, keeper, reporter, tasks._run(lease.run_id, settings, reporter, started, ranks=ranks),
                    settings)
    except LeaseLost:
        log.warning("run %s: lease lost (attempt %s); nothing more is written", lease.run_id, lease.attempt)
    finally:
        keeper.close()
        logs.stop(store_rest=not keeper.lost.is_set())


def _follow(args: argparse.Namespace, ranks) -> None:
    """Ranks 1…: the same training, from the checkpoint rank 0 picked; no SQL writes, no files."""
    from workers import tasks
    from workers.training.distributed import Silent
    from workers.training.resume import CheckpointStore

    settings = get_settings()
    config, source, rows, eval_rows = tasks.load_run(args.run_id, settings)
    checkpoints = CheckpointStore(run_dir(settings, args.run_id) / "checkpoints")  # read only: rank 0 writes
    step = ranks.broadcast_int(-1)  # after rank 0 pruned and started the attempt
    resume = checkpoints.get(step) if step >= 0 else None

    def no_outputs(kind: str) -> Path:
        raise RuntimeError(f"rank {ranks.rank} does not write outputs ({kind}); rank 0 does")

    tasks.fine_tune(config, rows, eval_rows, source, Silent(), artifact_dir=no_outputs,
                    find_adapter=lambda other: tasks._adapter_location(settings, other),
                    checkpoints=checkpoints, resume=resume, ranks=ranks)


def _watch_worker(pid: int) -> None:
    """Exit when the worker that started this run is gone: its lease must run out, not live on here."""
    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                log.warning("the worker (pid %s) is gone; this rank exits", pid)
                os._exit(1)
            except PermissionError:
                pass  # it exists

    threading.Thread(target=watch, name="worker-watch", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
