"""The `peftlab` command: up (everything), serve, worker, users, token, runs, models import, db upgrade."""
import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _apply(args: argparse.Namespace) -> None:
    """Command-line options become PEFTLAB_* settings, so child processes inherit them."""
    if getattr(args, "data_dir", None):
        os.environ["PEFTLAB_DATA_DIR"] = str(Path(args.data_dir).resolve())
    if getattr(args, "host", None):
        os.environ["PEFTLAB_HOST"] = args.host
    if getattr(args, "port", None):
        os.environ["PEFTLAB_PORT"] = str(args.port)
    from app.db import reset_caches

    reset_caches()


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    _apply(args)
    from app.migrate import upgrade

    upgrade()
    print("database is at the latest schema")
    return 0


def cmd_users_create(args: argparse.Namespace) -> int:
    _apply(args)
    from app.auth import service
    from app.db import session_scope

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 2
    with session_scope() as session:
        try:
            user = service.create_user(session, username=args.username, password=password, is_admin=args.admin)
        except service.AuthError as e:
            print(e, file=sys.stderr)
            return 2
        print(f"created {'admin ' if user.is_admin else ''}user {user.username}")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    """Print a new API token (only its hash is stored) for --user, or for the first admin."""
    _apply(args)
    from app.auth import service
    from app.db import session_scope

    with session_scope() as session:
        user = service.get_user_by_name(session, username=args.user) if args.user else service.first_admin(session)
        if user is None:
            print(f"no such user: {args.user}" if args.user else "there is no admin yet: run `peftlab users create --admin`",
                  file=sys.stderr)
            return 2
        token, _ = service.create_token(session, user=user, name=args.name)
    print(token)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    _apply(args)
    import uvicorn

    from app.config import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    # X-Forwarded-For/-Proto are believed only from the proxies in PEFTLAB_TRUSTED_PROXIES (none by
    # default): from anyone else they would let a client pick its own address, e.g. to dodge the
    # sign-in limit. uvicorn's own default trusts every local process.
    trusted = settings.trusted_proxies
    uvicorn.run("app.main:create_app", factory=True, host=settings.host, port=settings.port,
                log_level="info", timeout_graceful_shutdown=3,
                proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None)
    return 0


QUEUE_KINDS = ("train", "predict")


def worker_queues(kinds: str, settings) -> list[str]:
    """'train,predict' → the Celery queue names those kinds have in the settings."""
    chosen = [k.strip() for k in kinds.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in QUEUE_KINDS]
    if unknown or not chosen:
        raise SystemExit(f"--queues takes a comma-separated list of {', '.join(QUEUE_KINDS)}; got {kinds!r}")
    names = {"train": settings.train_queue, "predict": settings.predict_queue}
    return [names[k] for k in dict.fromkeys(chosen)]


def cmd_worker(args: argparse.Namespace) -> int:
    _apply(args)
    if args.gpus is not None:
        # Before torch loads: this process sees only its GPUs (one worker per GPU, or one per group of
        # GPUs that multi-GPU runs share).
        gpus = ",".join(g.strip() for g in str(args.gpus).split(",") if g.strip())
        if not gpus or not all(g.isdigit() for g in gpus.split(",")):
            raise SystemExit(f"--gpus takes GPU indices separated by commas, e.g. 0 or 0,1; got {args.gpus!r}")
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
        os.environ["PEFTLAB_GPUS"] = gpus
    if args.cpu_processes is not None:
        os.environ["PEFTLAB_CPU_PROCESSES"] = str(args.cpu_processes)
    from app.config import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    from workers.celery_app import celery

    queues = worker_queues(args.queues, settings)
    name = f"peftlab-{os.getpid()}@%h"
    argv = ["worker", "--pool", "solo", "--concurrency", "1", "-Q", ",".join(queues), "-n", name,
            "--without-gossip", "--without-mingle", "--loglevel", args.loglevel]
    celery.worker_main(argv=argv)
    return 0


def _no_users() -> bool:
    from app.auth import service
    from app.db import session_scope

    with session_scope() as session:
        return service.count_users(session) == 0


class Supervised:
    """A child process of `peftlab up` that comes back when it dies: at once after a long life, then
    after 1, 2, 4 … 30 s while it keeps dying young, so a crash loop does not spin the CPU."""

    YOUNG_S = 60.0
    MAX_DELAY_S = 30.0

    def __init__(self, name: str, start):
        self.name, self._start = name, start
        self.proc: subprocess.Popen | None = start()
        self.started = time.monotonic()
        self.quick_deaths = 0
        self.due: float | None = None  # when a dead one is started again

    def check(self) -> None:
        now = time.monotonic()
        if self.proc is None:
            if now >= self.due:
                self.proc, self.started, self.due = self._start(), now, None
            return
        if self.proc.poll() is None:
            return
        self.quick_deaths = self.quick_deaths + 1 if now - self.started < self.YOUNG_S else 0
        delay = min(self.MAX_DELAY_S, 2.0 ** (self.quick_deaths - 1)) if self.quick_deaths else 0.0
        print(f"{self.name} exited with {self.proc.returncode}; restarting"
              + (f" in {delay:.0f} s" if delay else ""), file=sys.stderr, flush=True)
        self.proc, self.due = None, now + delay

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def wait(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cmd_up(args: argparse.Namespace) -> int:
    """Migrate, then run the server here and N workers beside it; Ctrl-C stops them all.

    Each child that dies comes back (the reaper recovers a dead worker's run)."""
    _apply(args)
    from app.config import get_settings
    from app.migrate import upgrade

    settings = get_settings()
    settings.ensure_dirs()
    upgrade()
    env = dict(os.environ)

    def start_worker(i: int) -> subprocess.Popen:
        # Workers 0..N-1 train; worker N answers predictions only, so they never wait behind a run.
        queues = "train" if i < args.workers else "predict"
        cmd = [sys.executable, "-m", "app.cli", "worker", "--queues", queues]
        if args.gpus:
            cmd += ["--gpus", args.gpus.split(",")[i % len(args.gpus.split(","))]]
        return subprocess.Popen(cmd, env=env)

    children = [Supervised(f"worker {i}", lambda i=i: start_worker(i)) for i in range(args.workers + 1)]
    children.append(Supervised("the server", lambda: subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"], env=env)))
    print(f"peftlab is up: http://{settings.host}:{settings.port}  (data in {settings.data_dir.resolve()})", flush=True)
    if _no_users():
        print(f"first start: open http://{settings.host}:{settings.port}/setup to create the admin account "
              "(or run `peftlab users create --admin --username NAME`)", flush=True)
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping:
            for child in children:
                child.check()
            time.sleep(0.5)
    finally:
        for child in children:
            child.stop()
        for child in children:
            child.wait()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peftlab", description="Parameter-efficient fine-tuning dashboard.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the server and workers on the embedded default (migrates first)")
    up.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=None, help="port (default 8000)")
    up.add_argument("--data-dir", default=None, help="where data lives (default ./peftlab-data)")
    up.add_argument("--workers", type=int, default=1,
                    help="number of training workers (one more worker answers predictions)")
    up.add_argument("--gpus", default=None, help="comma-separated GPU indices, one per worker in turn")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="run the web server only")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--data-dir", default=None)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run one worker (one per GPU)")
    worker.add_argument("--gpus", default=None,
                        help="the GPU indices this worker owns, e.g. 0 or 0,1 (a run with training.gpus N trains on N "
                             "of them)")
    # Tests: a CPU worker that runs training.gpus N runs as N gloo processes (no GPU needed).
    worker.add_argument("--cpu-processes", type=int, default=None, help=argparse.SUPPRESS)
    worker.add_argument("--queues", default="train,predict",
                        help="what it works on: train, predict or both (default train,predict)")
    worker.add_argument("--data-dir", default=None)
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=cmd_worker)

    users = sub.add_parser("users", help="user accounts")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    users_create = users_sub.add_parser("create", help="create a user (asks for the password)")
    users_create.add_argument("--username", required=True)
    users_create.add_argument("--admin", action="store_true", help="may see everything and register base models")
    users_create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    users_create.add_argument("--data-dir", default=None)
    users_create.set_defaults(func=cmd_users_create)

    token = sub.add_parser("token", help="API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    token_create = token_sub.add_parser("create", help="print a new API token")
    token_create.add_argument("--user", default=None, help="whose token (default: the first admin)")
    token_create.add_argument("--name", default="cli", help="a label to tell tokens apart")
    token_create.add_argument("--data-dir", default=None)
    token_create.set_defaults(func=cmd_token_create)

    from app import cli_models, cli_runs

    cli_runs.add_parser(sub)
    cli_models.add_parser(sub)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_sub.add_parser("upgrade", help="apply Alembic migrations")
    db_upgrade.add_argument("--data-dir", default=None)
    db_upgrade.set_defaults(func=cmd_db_upgrade)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "runs":
        from app.cli_runs import run_command

        return run_command(args)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
