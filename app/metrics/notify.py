"""Telling the servers' live streams that a run changed, once the change is committed.

A write that a live stream shows (metric points, a status or progress change) calls `changed(session,
run_id)`. Nothing is sent then: the run id waits in the session until its transaction commits, and a
rollback forgets it, so a stream woken by the message always finds the rows it was woken for. The
message carries only the run id ("*": every run, e.g. a revoked token whose streams must end); the
database stays the source of truth and a server that missed a message catches up at its next safety
poll. Sending never raises: a lost message costs latency, a failed commit path would cost training.

Two transports, chosen like the broker (app/metrics/listen.py is the receiving side):
- Redis broker: PUBLISH on a channel of the broker's Redis, named after the deployment's secret key
  (two deployments on one Redis do not hear each other). Not after the database URL: hosts may reach one
  database by different names (an address here, a service name there, a pooler in front), and every
  host of a deployment shares the secret key anyway, since workers refuse tasks signed with another.
- Embedded default: one UNIX datagram socket per server process in a folder of the data dir; a writer
  sends the run id to every socket there. A datagram needs no connection and no server, and a socket
  whose process died refuses it, which is how its file gets cleaned up.
"""
import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.config import Settings, get_settings

log = logging.getLogger(__name__)

EVERY_RUN = "*"
_PENDING = "live_changed_runs"  # session.info key: run ids changed in the open transaction
# A UNIX socket path must fit in sockaddr_un (108 bytes on Linux, 104 on macOS).
_MAX_SOCKET_PATH = 100


def changed(session: Session, run_id: int | str) -> None:
    """Announce `run_id` (or EVERY_RUN) to the live streams once this session's transaction commits."""
    session.info.setdefault(_PENDING, set()).add(str(run_id))


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if pending:
        publish(pending)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


# After a failed send, announcements pause this long: an unreachable Redis would otherwise cost every
# worker flush a connect timeout. The servers' safety poll carries the streams meanwhile.
PAUSE_AFTER_FAILURE = 5.0
_paused_until = 0.0


def publish(run_ids) -> None:
    """Send these run ids to every server now (called after a commit; never raises)."""
    global _paused_until
    if time.monotonic() < _paused_until:
        return
    try:
        _publisher(*_key(get_settings())).send(sorted(run_ids))
    except Exception:  # noqa: BLE001 — the safety poll delivers what a failed message did not
        _paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
        _warn("could not announce changed runs %s; pausing announcements for %s s", run_ids, PAUSE_AFTER_FAILURE)


def uses_redis(settings: Settings) -> bool:
    return settings.resolved_broker_url.startswith(("redis://", "rediss://"))


def channel(settings: Settings) -> str:
    digest = hashlib.sha256(b"peftlab live channel\0" + settings.resolved_secret_key.encode()).hexdigest()
    return "peftlab.live." + digest[:16]  # a hash: the key itself is not for everyone who can list channels


def socket_dir(settings: Settings) -> Path:
    """data_dir/live, or a folder under the temp dir named after it when that path is too long for a socket."""
    folder = (settings.data_dir / "live").resolve()
    if len(str(folder)) + 20 > _MAX_SOCKET_PATH:
        folder = Path(tempfile.gettempdir()) / ("peftlab-live-" + hashlib.sha256(str(folder).encode()).hexdigest()[:16])
    return folder


def _key(settings: Settings) -> tuple:
    # Per process id: a forked worker child opens its own Redis connections and socket.
    return os.getpid(), settings.resolved_broker_url if uses_redis(settings) else None, \
        channel(settings), str(socket_dir(settings))


@lru_cache(maxsize=8)
def _publisher(_pid: int, redis_url: str | None, channel_name: str, folder: str):
    return RedisPublisher(redis_url, channel_name) if redis_url else SocketPublisher(Path(folder))


class RedisPublisher:
    def __init__(self, url: str, channel_name: str):
        import redis

        # Short timeouts: a publish rides on a worker's flush, and Redis being away must not stall training.
        self.client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.channel = channel_name

    def send(self, run_ids: list[str]) -> None:
        self.client.publish(self.channel, ",".join(run_ids))


class SocketPublisher:
    def __init__(self, folder: Path):
        self.folder = folder
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)  # a server whose queue is full misses this one (its safety poll covers it)
        self.lock = threading.Lock()

    def send(self, run_ids: list[str]) -> None:
        message = ",".join(run_ids).encode()
        try:
            entries = [e.path for e in os.scandir(self.folder) if e.name.endswith(".sock")]
        except FileNotFoundError:
            return  # no server has listened yet
        with self.lock:
            for path in entries:
                try:
                    self.sock.sendto(message, path)
                except (ConnectionRefusedError, FileNotFoundError):
                    _unlink_stale(path)  # its server is gone
                except BlockingIOError:
                    pass  # that server is behind; it reads the database at its next safety poll anyway
                except OSError:
                    _warn("could not notify %s", path)


def _unlink_stale(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


_last_warning = 0.0


def _warn(message: str, *args) -> None:
    """At most one warning a minute: a Redis outage must not write a line per flush."""
    global _last_warning
    if time.monotonic() - _last_warning > 60:
        _last_warning = time.monotonic()
        log.warning(message, *args, exc_info=True)
