"""Load on ``POST /generate`` with locust: 16, 64 and 256 concurrent clients, side by side in one run.

Builds a store with a benchmark model (``bench_model.py``; ``--model demo``: the 64 px ``dcgan`` that
``make demo`` trains, the default; ``dcgan-seed``: the report's 128 px network, ~10x slower),
starts its own ``drawai up`` on a free port (embedded Redis, ``--api-workers`` API processes), warms
it up, then for each client count runs locust headless (as a library: ``Environment`` + local runner)
for ``--warmup`` seconds unrecorded and ``--seconds`` recorded. Every client asks
``count=--count&format=--format`` back to back; a 429 client waits the ``Retry-After`` it got (as a
well-behaved client does; ``--ignore-retry-after`` retries at once). Printed per client count:
accepted img/s, p50/p99/max of accepted requests, share rejected (429), 5xx, connection errors, the
mean Retry-After, and the API processes' RSS before and after; then PASS/FAIL per target:

- p99 of accepted requests at 256 clients <= 3 x p99 at 16 clients;
- img/s at 256 clients >= 0.9 x img/s at 16 clients;
- 0 5xx and 0 connection errors in every run;
- RSS growth of every API process over the whole run < 100 MB.

    python benchmarks/load.py [--clients 16,64,256] [--seconds 20] [--count 8] [--max-queued-rows N]
"""

from __future__ import annotations

# ruff: noqa: E402 (gevent must patch the standard library before anything else imports it)
from gevent import monkey

monkey.patch_all()  # before anything imports socket, ssl or threading (locust would do it at import)

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import httpx
import numpy as np
import psutil
from bench_stack import LocalStack, build_home, rss_mb
from locust import FastHttpUser, constant, task
from locust.env import Environment
from prometheus_client.parser import text_string_to_metric_families

RSS_LIMIT_MB = 100.0


class GenerateUser(FastHttpUser):
    """One client: ``POST /generate`` back to back; on 429 it waits ``Retry-After`` seconds."""

    wait_time = constant(0)
    network_timeout = 120.0
    connection_timeout = 30.0
    path = "/generate?count=8&format=zip"
    honor_retry_after = True

    @task
    def generate(self) -> None:
        wait = 0.0
        with self.client.post(self.path, name="generate", catch_response=True) as r:
            if r.status_code in (200, 429):
                r.success()  # 429 is an answer, not a failure: counted apart
                if r.status_code == 429 and self.honor_retry_after:
                    wait = float(r.headers.get("retry-after") or 1)
            else:
                r.failure(f"status {r.status_code}")
        if wait:
            gevent.sleep(wait)


@dataclass
class Run:
    clients: int
    seconds: float
    count: int
    records: list[tuple[float, int, float, str]] = field(default_factory=list)  # (end, status, ms, retry-after)
    rss_before: list[float] = field(default_factory=list)
    rss_after: list[float] = field(default_factory=list)
    cpu_api: float = 0.0  # CPU seconds of the API processes in the recorded window, per second
    cpu_load: float = 0.0  # the same for this process (locust: the load generator)
    batch_rows: float = 0.0  # mean rows per inference batch in the window
    infer_ms: float = 0.0  # inference milliseconds per image in the window

    def in_window(self, t0: float) -> list[tuple[float, int, float, str]]:
        return [r for r in self.records if t0 <= r[0] <= t0 + self.seconds]


def run_clients(stack: LocalStack, clients: int, args: argparse.Namespace) -> Run:
    run = Run(clients, args.seconds, args.count)
    GenerateUser.path = f"/generate?count={args.count}&format={args.format}"
    GenerateUser.honor_retry_after = not args.ignore_retry_after
    env = Environment(user_classes=[GenerateUser], host=stack.url, stop_timeout=60)
    state: dict[str, Any] = {"t0": None}

    def on_request(response_time: float, response: Any, exception: Any, start_time: float, **_: Any) -> None:
        status = int(getattr(response, "status_code", 0) or 0)
        retry = response.headers.get("retry-after", "") if status == 429 else ""
        run.records.append((start_time + response_time / 1000, status, response_time, retry))

    env.events.request.add_listener(on_request)
    run.rss_before = [rss_mb(p) for p in stack.api_processes()]
    runner = env.create_local_runner()
    runner.start(clients, spawn_rate=clients)
    gevent.sleep(args.warmup)
    state["t0"] = time.time()
    api, me = stack.api_processes(), psutil.Process()
    api0, me0, batches0 = sum(cpu_s(p) for p in api), cpu_s(me), batch_totals(stack.url)
    gevent.sleep(args.seconds)
    n, rows, secs = (b - a for a, b in zip(batches0, batch_totals(stack.url), strict=True))
    run.batch_rows, run.infer_ms = (rows / n, 1000 * secs / rows) if n and rows else (0.0, 0.0)
    run.cpu_api = (sum(cpu_s(p) for p in api) - api0) / args.seconds
    run.cpu_load = (cpu_s(me) - me0) / args.seconds
    runner.stop()  # users finish their request in flight (stop_timeout), so nothing is cut off mid-answer
    runner.quit()
    run.records = run.in_window(state["t0"])
    gevent.sleep(2.0)  # the server finishes anything a stopped user left behind
    run.rss_after = [rss_mb(p) for p in stack.api_processes()]
    return run


def batch_totals(url: str) -> tuple[float, float, float]:
    """(inference batches, rows, inference seconds) so far, from the API's ``/metrics``."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = {"drawai_generation_batch_size_count": 0.0, "drawai_generation_batch_size_sum": 0.0}
    found["drawai_inference_duration_seconds_sum"] = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name] += sample.value
    return tuple(found.values())  # type: ignore[return-value]


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def summary(run: Run) -> dict[str, float]:
    ok = np.array([ms for _, s, ms, _ in run.records if s == 200]) / 1000
    total = len(run.records)
    rejected = sum(1 for _, s, _, _ in run.records if s == 429)
    retry = [float(r) for _, s, _, r in run.records if s == 429 and r]
    return {
        "img_s": len(ok) * run.count / run.seconds,
        "p50": float(np.percentile(ok, 50)) if len(ok) else float("nan"),
        "p99": float(np.percentile(ok, 99)) if len(ok) else float("nan"),
        "max": float(ok.max()) if len(ok) else float("nan"),
        "requests": total,
        "rejected": rejected / total if total else 0.0,
        "5xx": sum(1 for _, s, _, _ in run.records if s >= 500),
        "conn_err": sum(1 for _, s, _, _ in run.records if s == 0),
        "other": sum(1 for _, s, _, _ in run.records if s not in (0, 200, 429) and s < 500),
        "retry_after": float(np.mean(retry)) if retry else 0.0,
    }


def print_table(runs: list[Run]) -> bool:
    head = f"{'clients':>7} {'img/s':>7} {'p50 s':>6} {'p99 s':>6} {'max s':>6} {'reqs':>6} {'429 %':>6}"
    head += f" {'5xx':>4} {'conn':>4} {'other':>5} {'R-A s':>5} {'CPU api':>7} {'CPU gen':>7} {'rows/b':>6}"
    print(head + f" {'ms/img':>6}  RSS before -> after (MB)")
    sums = {r.clients: summary(r) for r in runs}
    for r in runs:
        s = sums[r.clients]
        rss = ", ".join(f"{a:.0f} -> {b:.0f}" for a, b in zip(r.rss_before, r.rss_after, strict=False))
        print(
            f"{r.clients:>7} {s['img_s']:>7.1f} {s['p50']:>6.2f} {s['p99']:>6.2f} {s['max']:>6.2f} "
            f"{s['requests']:>6.0f} {100 * s['rejected']:>6.1f} {s['5xx']:>4.0f} {s['conn_err']:>4.0f} "
            f"{s['other']:>5.0f} {s['retry_after']:>5.1f} {r.cpu_api:>7.2f} {r.cpu_load:>7.2f} "
            f"{r.batch_rows:>6.1f} {r.infer_ms:>6.2f}  {rss}"
        )
    lo, hi = sums[runs[0].clients], sums[runs[-1].clients]
    growth = max(b - a for a, b in zip(runs[0].rss_before, runs[-1].rss_after, strict=False))
    checks = [
        (f"p99 at {runs[-1].clients} / p99 at {runs[0].clients}", hi["p99"] / lo["p99"], "<=", 3.0),
        (f"img/s at {runs[-1].clients} / img/s at {runs[0].clients}", hi["img_s"] / lo["img_s"], ">=", 0.9),
        ("5xx responses, all runs", sum(sums[r.clients]["5xx"] for r in runs), "<=", 0),
        ("connection errors, all runs", sum(sums[r.clients]["conn_err"] for r in runs), "<=", 0),
        ("RSS growth of an API process (MB), whole run", growth, "<", RSS_LIMIT_MB),
    ]
    ok = True
    for name, value, op, target in checks:
        passed = {"<=": value <= target, ">=": value >= target, "<": value < target}[op]
        ok &= passed
        print(f"{name}: {value:.3g} (target {op} {target:g}): {'PASS' if passed else 'FAIL'}")
    return ok


def warm_up(url: str, args: argparse.Namespace) -> None:
    """First calls allocate (ONNX Runtime arenas, encoders): RSS 'before' is measured after them."""
    with httpx.Client(base_url=url, timeout=120) as c:
        for _ in range(5):
            c.post("/generate", params={"count": args.count, "format": args.format}).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="16,64,256", help="comma-separated client counts, in order")
    parser.add_argument("--seconds", type=float, default=20.0, help="recorded seconds per client count")
    parser.add_argument("--warmup", type=float, default=5.0, help="unrecorded seconds before each recording")
    parser.add_argument("--count", type=int, default=8, help="images per request")
    parser.add_argument("--format", default="zip", choices=["png", "zip", "json", "npy", "grid"])
    parser.add_argument("--model", default="demo", choices=["demo", "dcgan-seed"], help="benchmark model")
    parser.add_argument("--api-workers", type=int, default=1, help="DRAWAI_API_WORKERS of the API")
    parser.add_argument("--max-queued-rows", type=int, default=None, help="DRAWAI_MAX_QUEUED_ROWS (default: its)")
    parser.add_argument("--ignore-retry-after", action="store_true", help="clients retry a 429 at once")
    args = parser.parse_args()
    t_start = time.perf_counter()
    settings = {"DRAWAI_API_WORKERS": str(args.api_workers), "DRAWAI_ONNX_PROVIDER": "cpu"}
    if args.max_queued_rows is not None:
        settings["DRAWAI_MAX_QUEUED_ROWS"] = str(args.max_queued_rows)
    with tempfile.TemporaryDirectory(prefix="drawai-load-") as tmp:
        home = Path(tmp) / "home"
        build_home(home, 1, args.model)
        stack = LocalStack(home, settings)
        stack.start()
        try:
            warm_up(stack.url, args)
            runs = []
            for n in [int(c) for c in args.clients.split(",")]:
                runs.append(run_clients(stack, n, args))
                print(f"{n} clients: {len(runs[-1].records)} requests recorded", flush=True)
        finally:
            stack.stop()
    print()
    print(f"model: {args.model} (bench_model.py, untrained); requests: count={args.count} format={args.format}")
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; locust in this process; "
        f"API workers {args.api_workers}; DRAWAI_MAX_QUEUED_ROWS={args.max_queued_rows or 'default'}; "
        f"{'retry at once' if args.ignore_retry_after else 'clients honour Retry-After'}"
    )
    print(f"{args.seconds:g} s recorded per client count after {args.warmup:g} s of warm-up")
    ok = print_table(runs)
    print(f"total runtime {time.perf_counter() - t_start:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
