"""A soak of ``POST /generate``: a steady request rate for ``--minutes``, a model activation every minute.

Builds a store with ``--versions`` (2) published copies of a benchmark model (``bench_model.py``,
``--model demo`` by default), starts its own ``drawai up`` with ``DRAWAI_API_WORKERS=--api-workers``
(2: the hot swap has to cross processes) on a free port and an embedded Redis, and sends
``--rate`` requests per second (``count=--count&format=--format``, open loop: a request is due at
its time whatever the previous ones did) from ``--threads`` keep-alive clients. Every minute it
activates the next version (``POST /models/{v}/activate``, alternating), which the other API
process follows through its store watcher. Printed once a minute and at the end: requests, failed
requests (anything but 200, or no answer: target 0), p50/p99, the versions served, responses still
from the old version more than ``DRAWAI_MODEL_WATCH_INTERVAL_S`` + 1 s after an activation, the RSS
and open file descriptors of every API process, and Redis's used memory; then the drift of each
from the first sample (taken after a warm-up) to the last.

    python benchmarks/soak.py [--minutes 10] [--rate 20] [--count 4] [--api-workers 2] [--versions 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from bench_stack import LocalStack, build_home, rss_mb

SWAP_GRACE_S = 1.0 + 1.0  # DRAWAI_MODEL_WATCH_INTERVAL_S (default 1 s) + a margin


@dataclass
class Sample:
    t: float
    rss: list[float]
    fds: list[int]
    redis_mb: float


@dataclass
class Soak:
    stack: LocalStack
    args: argparse.Namespace
    results: list[tuple[float, int, str, float]] = field(default_factory=list)  # (start, status, version, s)
    activations: list[tuple[float, str]] = field(default_factory=list)  # (time answered, version)
    samples: list[Sample] = field(default_factory=list)
    local: threading.local = field(default_factory=threading.local)

    def request(self, due: float) -> None:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = httpx.Client(base_url=self.stack.url, timeout=120)
        params = {"count": self.args.count, "format": self.args.format}
        t0 = time.time()
        try:
            r = client.post("/generate", params=params)
            status, version = r.status_code, r.headers.get("x-drawai-model-version", "")
        except httpx.HTTPError:
            status, version = 0, ""
        self.results.append((t0, status, version, time.time() - t0))

    def sample(self) -> Sample:
        procs = self.stack.api_processes()
        s = Sample(time.time(), [rss_mb(p) for p in procs], [p.num_fds() for p in procs], 0.0)
        s.redis_mb = self.stack.redis_memory() / 2**20
        self.samples.append(s)
        return s

    def activate(self, version: str) -> None:
        r = httpx.post(f"{self.stack.url}/models/{version}/activate", timeout=120)
        r.raise_for_status()
        self.activations.append((time.time(), version))

    def stale(self, since: float, until: float) -> int:
        """Responses started after an activation's grace that were still served by another version."""
        n = 0
        for t, version in self.activations:
            for start, status, served, _ in self.results:
                if t + SWAP_GRACE_S <= start < until and start >= since and status == 200 and served != version:
                    later = [a for a, _ in self.activations if t < a <= start]
                    n += not later
        return n


def print_minute(soak: Soak, minute: int, since: float, until: float, s: Sample) -> None:
    rows = [r for r in soak.results if since <= r[0] < until]
    ok = np.array([d for _, st, _, d in rows if st == 200])
    failed = sum(1 for r in rows if r[1] != 200)
    p50, p99 = (np.percentile(ok, 50), np.percentile(ok, 99)) if len(ok) else (float("nan"),) * 2
    served = ",".join(sorted({v for _, st, v, _ in rows if st == 200}))
    rss = "/".join(f"{x:.0f}" for x in s.rss)
    fds = "/".join(str(x) for x in s.fds)
    stale = soak.stale(since, until)
    print(
        f"{minute:>6} {len(rows):>6} {failed:>6} {p50:>6.3f} {p99:>6.3f} {served:>8} {stale:>5} "
        f"{rss:>13} {fds:>9} {s.redis_mb:>8.2f}",
        flush=True,
    )


def run(soak: Soak, versions: list[str]) -> None:
    args = soak.args
    interval = 1.0 / args.rate
    t0 = time.time()
    end = t0 + 60 * args.minutes
    next_activation, k, minute_start, minute = t0 + 60, 0, t0, 1
    print(f"{'minute':>6} {'reqs':>6} {'failed':>6} {'p50 s':>6} {'p99 s':>6} {'served':>8} {'stale':>5} "
          f"{'RSS MB':>13} {'fds':>9} {'Redis MB':>8}", flush=True)  # fmt: skip
    with ThreadPoolExecutor(args.threads) as pool:
        i = 0
        while (due := t0 + i * interval) < end:
            now = time.time()
            if now >= next_activation:
                print_minute(soak, minute, minute_start, now, soak.sample())
                minute_start, minute = now, minute + 1
                k += 1
                pool.submit(soak.activate, versions[k % len(versions)])
                next_activation += 60
            if due > now:
                time.sleep(min(due - now, max(0.0, next_activation - now)))
                continue
            pool.submit(soak.request, due)
            i += 1
    print_minute(soak, minute, minute_start, time.time(), soak.sample())


def report(soak: Soak) -> bool:
    results = soak.results
    failed = sum(1 for r in results if r[1] != 200)
    by_status: dict[int, int] = {}
    for r in results:
        by_status[r[1]] = by_status.get(r[1], 0) + 1
    first, last = soak.samples[0], soak.samples[-1]
    print(f"requests {len(results)}, by status {dict(sorted(by_status.items()))}; activations {len(soak.activations)}")
    for i, (a, b) in enumerate(zip(first.rss, last.rss, strict=False)):
        print(f"API process {i + 1}: RSS {a:.1f} -> {b:.1f} MB (drift {b - a:+.1f} MB); "
              f"open fds {first.fds[i]} -> {last.fds[i]}")  # fmt: skip
    print(f"Redis used memory {first.redis_mb:.2f} -> {last.redis_mb:.2f} MB ({last.redis_mb - first.redis_mb:+.2f})")
    stale = soak.stale(0, float("inf"))
    print(f"stale responses (old version > {SWAP_GRACE_S:g} s after an activation): {stale}")
    ok = failed == 0 and len(first.rss) == soak.args.api_workers
    print(f"failed requests: {failed} (target 0): {'PASS' if failed == 0 else 'FAIL'}")
    print(f"API processes seen: {len(first.rss)} (expected {soak.args.api_workers})")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--count", type=int, default=4, help="images per request")
    parser.add_argument("--format", default="zip", choices=["png", "zip", "json", "npy", "grid"])
    parser.add_argument("--threads", type=int, default=8, help="concurrent keep-alive clients")
    parser.add_argument("--api-workers", type=int, default=2, help="DRAWAI_API_WORKERS")
    parser.add_argument("--versions", type=int, default=2, help="model versions published and activated in turn")
    parser.add_argument("--model", default="demo", choices=["demo", "dcgan-seed"], help="benchmark model")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="drawai-soak-") as tmp:
        home = Path(tmp) / "home"
        build_home(home, args.versions, args.model)
        stack = LocalStack(home, {"DRAWAI_API_WORKERS": str(args.api_workers), "DRAWAI_ONNX_PROVIDER": "cpu"})
        stack.start()
        soak = Soak(stack, args)
        try:
            versions = [f"v{i + 1}" for i in range(args.versions)]
            with ThreadPoolExecutor(args.threads) as pool:  # warm-up: every process allocates before the first sample
                list(pool.map(soak.request, [time.time()] * 4 * args.threads))
            soak.results.clear()
            soak.sample()
            run(soak, versions[::-1])  # the last published is active: the first activation switches away
        finally:
            stack.stop()
    print(f"\nmodel: {args.model}; {args.rate:g} req/s x count={args.count} {args.format} for {args.minutes:g} min; "
          f"{args.api_workers} API processes; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    sys.exit(0 if report(soak) else 1)


if __name__ == "__main__":
    main()
