"""The receiving side of app/metrics/notify.py: one listener per server process (per event loop), not per
stream. It hands each announced run id to `on_change`, which wakes that run's live feed (app/metrics/live.py);
the feed then reads the new rows. `None` means "maybe anything": the listener (re)connected and may have
missed messages, so every feed reads once.
"""
import asyncio
import atexit
import logging
import os
import socket
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from app.config import get_settings
from app.metrics import notify

log = logging.getLogger(__name__)

OnChange = Callable[[str | None], None]
RECONNECT_SECONDS = 1.0


def _dispatch(payload: bytes, on_change: OnChange) -> None:
    for run_id in payload.decode(errors="replace").split(","):
        if run_id:
            on_change(run_id)


class SocketListener:
    """A UNIX datagram socket in the live folder, read by the event loop itself (no thread, no task)."""

    def __init__(self, folder: Path, on_change: OnChange):
        self.on_change = on_change
        folder.mkdir(parents=True, exist_ok=True)
        self.path = str(folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._readable)
        atexit.register(self._unlink)  # a killed server leaves its file; writers remove it when it refuses

    def _readable(self) -> None:
        while True:
            try:
                payload = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                log.warning("live listener socket failed", exc_info=True)
                return
            _dispatch(payload, self.on_change)

    def _unlink(self) -> None:
        with suppress(OSError):
            os.unlink(self.path)

    async def close(self) -> None:
        with suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self._unlink()
        atexit.unregister(self._unlink)


class RedisListener:
    """SUBSCRIBE on the broker's Redis in one task; a dropped connection is retried, and every feed reads
    once after each (re)subscribe, for what was published while it was away."""

    def __init__(self, url: str, channel: str, on_change: OnChange):
        self.url, self.channel, self.on_change = url, channel, on_change
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        import redis.asyncio as redis

        while True:
            # Pings on a quiet connection, so a silently dropped one is noticed and re-subscribed.
            client = redis.Redis.from_url(self.url, socket_connect_timeout=2.0, health_check_interval=30)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        self.on_change(None)
                    elif message["type"] == "message":
                        _dispatch(message["data"], self.on_change)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 — Redis restarting: streams fall back to the safety poll meanwhile
                log.warning("live listener lost Redis; reconnecting", exc_info=True)
            finally:
                with suppress(Exception):
                    await pubsub.aclose()
                    await client.aclose()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def close(self) -> None:
        self.task.cancel()
        with suppress(asyncio.CancelledError):
            await self.task


def start(on_change: OnChange):
    """Start this loop's listener for the current settings' transport."""
    settings = get_settings()
    if notify.uses_redis(settings):
        return RedisListener(settings.resolved_broker_url, notify.channel(settings), on_change)
    return SocketListener(notify.socket_dir(settings), on_change)
