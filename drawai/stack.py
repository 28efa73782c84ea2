"""The embedded stack behind ``drawai up`` and ``drawai demo``: Redis, one worker, the API."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from models.platform.redisconn import DEFAULT_URL, _answers, resolve_url, stop_embedded
from models.platform.settings import Settings

log = logging.getLogger(__name__)


class Stack:
    """Starts Redis (the configured, the local or an embedded one), a worker and the API; stops them all."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
        self.settings = settings
        self.host, self.port = host, port
        self.home = Path(settings.home).resolve()
        self.logs = self.home / "logs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.embedded = False
        self.redis_url = ""
        self.stopping = False

    def handle_signals(self) -> None:
        """SIGTERM and SIGINT (Ctrl-C) ask the stack to stop; call before ``start``."""

        def handler(signum: int, _frame: object) -> None:
            log.info("signal %d: stopping", signum)
            self.stopping = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.embedded = not self.settings.redis_url and not _answers(DEFAULT_URL)
        self.redis_url = resolve_url(self.settings)
        env = {**os.environ, "DRAWAI_HOME": str(self.home), "DRAWAI_REDIS_URL": self.redis_url}
        py = sys.executable
        self._spawn("worker", [py, "-m", "drawai.cli", "worker"], env)
        # `drawai api`: DRAWAI_API_WORKERS processes (multiprocess metrics when more than one).
        self._spawn("api", [py, "-m", "drawai.cli", "api", "--host", self.host, "--port", str(self.port)], env)
        log.info(
            "redis: %s%s", self.redis_url, " (embedded, data in %s)" % (self.home / "redis") if self.embedded else ""
        )
        for name in self.procs:
            log.info("%s: log in %s", name, self.logs / f"{name}.log")

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}; see {self.logs / (name + '.log')}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        if self.stopping:
            return
        raise TimeoutError(f"the API did not answer on {self.url} within {timeout:.0f} s")

    def wait(self) -> int:
        """Block until a child exits or a signal (see ``handle_signals``) stops the stack."""
        while not self.stopping:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    log.error("%s exited with %s", name, p.returncode)
                    return 1
            time.sleep(0.2)
        return 0

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # the worker finishes its current job's step and leaves
        for name, p in self.procs.items():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop; killing it", name)
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            wait_group_gone(p.pid, name)  # its children too (the work horse): "stopped" means nothing is left
        if self.embedded:
            stop_embedded(self.home / "redis")
        log.info("stack stopped")


def live_members(pgid: int) -> list[int]:
    """Pids of the processes of group ``pgid`` that still run (zombies, waiting to be reaped, do not)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def wait_group_gone(pgid: int, name: str, timeout_s: float = 15.0) -> None:
    """Wait until no process of group ``pgid`` runs; past ``timeout_s``, kill what is left and wait once more."""
    if not Path("/proc/self/stat").exists():  # not Linux: the leader's exit is all we can see
        return
    for attempt in range(2):
        deadline = time.monotonic() + timeout_s
        while live_members(pgid):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        else:
            return
        left = live_members(pgid)
        log.warning("%s left processes %s; %s", name, left, "killing them" if attempt == 0 else "giving up")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
