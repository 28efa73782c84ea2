"""Images/s of generation: every raw engine/precision/streams setting of this machine, and the API end to end.

One model (default the report's ``dcgan-seed`` network, 128 px, 27M-parameter generator; ``--model demo`` for the
``quick`` preset's; untrained weights: speed does not depend on them), one batch of ``--batch`` (64) latents,
side by side in one run:

1. PyTorch eager, ``torch.no_grad()`` (context only);
2. every raw setting calibration may pick here (``service.engines.calibration.candidates``): ONNX Runtime fp32,
   OpenVINO fp32, and OpenVINO bf16/fp16 where the CPU plugin reports them, each with 1, 2, ... streams: the
   batch split over the streams and run at once, as the API's batcher does;
3. ``POST /generate?count=64&format=npy`` against a real ``uvicorn`` server with ``DRAWAI_ENGINE=auto`` (it
   calibrates when the model loads), end to end (HTTP, latents, batcher, inference, encoding, transfer);
4. ``--clients`` (16) connections (one asyncio loop) each sending ``--requests`` ``count=1&format=png``
   requests to that server;
5. ``POST /generate?count=64`` against a second server pinned to ONNX Runtime fp32 with one stream: the path
   every request took before engines and streams existed.

Cases run in rotating order each round, each after a short pause and for at least ``MIN_CASE_S`` of calls back to
back, so noise hits all alike; the best images/s over the rounds counts. Ratios (targets): REST count=64 / best raw
setting (>= 0.9), 16 x count=1 / REST count=64 (>= 0.8), REST count=64 auto / REST count=64 ORT fp32 x1 (>= 3 on a
CPU with bf16; reported elsewhere, with the CPU's flags). Each REST case also shows the API process's CPU
milliseconds per image (median over the rounds): inference, plus what each request costs in HTTP and encoding.

    python benchmarks/generate.py [--model dcgan-seed|demo] [--rounds 5] [--requests 4] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import openvino as ov
import torch
from bench_model import SPECS, publish_bench_model

from models.platform.cpu import cpu_info
from models.platform.grids import to_uint8
from models.platform.redisconn import stop_embedded
from models.platform.sampling import latents
from models.platform.store import Store
from service.engines import Engine, open_engine
from service.engines.calibration import Preferences, candidates

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 180.0
HTTP_TIMEOUT_S = 600.0
# A pause before each case: ONNX Runtime's pool threads spin on after a run, and took CPU from the case that
# followed (REST right after raw ORT fp32 x1: 276 against 296 img/s after 0.2 s).
SETTLE_S = 0.3
MIN_CASE_S = 1.0  # each case's measurement: calls back to back for at least this long
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16", "amx_int8", "avx_vnni")


def cpu_description() -> str:
    """The CPU's model name and the flags that decide the engines' precisions (read here, never assumed)."""
    name, flags = cpu_info()
    present = [f for f in CPU_FLAGS if f in flags]
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return f"{name}; flags: {' '.join(present) or 'none of ' + ' '.join(CPU_FLAGS)}; OpenVINO CPU: {' '.join(caps)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(home: Path, log: Path, env_extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "DRAWAI_HOME": str(home), "PYTHONPATH": str(ROOT), **env_extra}
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the API did not become ready in {STARTUP_TIMEOUT_S:g} s")
        time.sleep(0.2)


def stop_api(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(n_images: int, fn: Callable[[], Any], server: int | None = None, cpu_ms: list[float] | None = None) -> float:
    """Images/s of ``fn`` (``n_images`` per call), called back to back for at least ``MIN_CASE_S``: one call after
    a pause found the server's pools asleep (one REST call read 270 img/s where calls back to back read 297).
    With ``server`` (a pid), its CPU milliseconds per image are appended to ``cpu_ms``."""
    calls, t0 = 0, time.perf_counter()
    c0 = cpu_seconds(server) if server is not None else 0.0
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= MIN_CASE_S:
            if server is not None and cpu_ms is not None:
                cpu_ms.append(1000 * (cpu_seconds(server) - c0) / (calls * n_images))
            return calls * n_images / elapsed


def raw_runner(engine: Engine, z: np.ndarray, pool: ThreadPoolExecutor) -> Callable[[], np.ndarray]:
    """The batch split over the engine's streams and run at once (the batcher's split: ceil(rows / streams))."""
    rows = -(-len(z) // engine.setting.streams)
    parts = [z[i : i + rows] for i in range(0, len(z), rows)]

    def run() -> np.ndarray:
        return np.concatenate([f.result() for f in [pool.submit(engine.run, {"z": p}) for p in parts]])

    return run


def rest_runner(url: str, count: int) -> Callable[[], bytes]:
    """One ``POST /generate?count=...&format=npy`` on a fresh ``http.client`` connection; the whole body is
    received, then returned as bytes (parsed only in the warm-up: what a client does with the array is not the
    API's time). httpx and ``np.load`` cost this one-client loop about 8 ms per 4 MB answer on the same cores,
    3 % of an answer of 64 128 px images at 300 img/s."""
    host, port = url.removeprefix("http://").split(":")
    target = f"/generate?count={count}&seed=0&format=npy"

    def run() -> bytes:
        conn = http.client.HTTPConnection(host, int(port), timeout=HTTP_TIMEOUT_S)
        try:
            conn.request("POST", target, headers={"Content-Length": "0"})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"POST {target}: {response.status}: {body[:200]!r}")
        return body

    return run


def npy(body: bytes) -> np.ndarray:
    return np.load(io.BytesIO(body), allow_pickle=False)


def singles_runner(url: str, clients: int, requests: int) -> Callable[[], None]:
    """``clients`` keep-alive connections each sending ``requests`` count=1 PNG requests in turn, from one asyncio
    event loop speaking plain HTTP/1.1 over sockets. The load generator shares the machine's cores with the server,
    so it must cost little: 16 threads of the standard library's ``http.client`` (the GIL passed between them on
    every request) took CPU the server then lacked, and httpx more (the same server answered 30 % fewer count=1
    requests per second with httpx than with ``http.client`` on two cores, a small model)."""
    host, port = url.removeprefix("http://").split(":")

    async def one_client(i: int, connected: asyncio.Queue[int], start: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))  # fresh: an idle one times out
        connected.put_nowait(i)
        await start.wait()
        for k in range(requests):
            target = f"/generate?count=1&seed={1_000_000 + i * requests + k}"
            writer.write(f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HTTP_TIMEOUT_S)
            status, length = _status_and_length(head)
            body = await reader.readexactly(length)
            assert status == 200 and body.startswith(b"\x89PNG"), (status, body[:200])
        writer.close()
        await writer.wait_closed()

    async def all_clients() -> None:
        connected: asyncio.Queue[int] = asyncio.Queue()
        start = asyncio.Event()
        tasks = [asyncio.create_task(one_client(i, connected, start)) for i in range(clients)]
        for _ in range(clients):  # every client connects, then all start at once
            await asyncio.wait_for(connected.get(), HTTP_TIMEOUT_S)
        start.set()
        await asyncio.gather(*tasks)

    def run() -> None:
        asyncio.run(all_clients())

    return run


def _status_and_length(head: bytes) -> tuple[int, int]:
    """The status code and Content-Length of a response head (the API never answers /generate chunked)."""
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:]) if k.lower() == "content-length")
    return int(lines[0].split(" ", 2)[1]), length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(SPECS), default="dcgan-seed")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="images per batch (raw settings, REST count)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent count=1 clients")
    parser.add_argument("--requests", type=int, default=4, help="count=1 requests per client per round")
    args = parser.parse_args()
    t_start = time.perf_counter()
    spec = SPECS[args.model]
    cores = len(os.sched_getaffinity(0))

    with tempfile.TemporaryDirectory(prefix="drawai-bench-") as tmp:
        home = Path(tmp) / "home"
        G, _, onnx_path = publish_bench_model(Store(home).ensure(), spec)
        params = sum(p.numel() for p in G.parameters())
        z = latents(spec.latent_dim, list(range(args.batch)))  # the latents of seed=0, count=batch
        pool = ThreadPoolExecutor(max(args.clients, 8))
        settings, _ = candidates(Preferences(cores=cores))
        engines = {str(s): open_engine(onnx_path, s, ["CPUExecutionProvider"], cores) for s in settings}

        auto, auto_url = start_api(home, Path(tmp) / "auto.log", {})
        base, base_url = start_api(
            home, Path(tmp) / "base.log",
            {"DRAWAI_ENGINE": "onnxruntime", "DRAWAI_PRECISION": "fp32", "DRAWAI_INFER_STREAMS": "1"},
        )  # fmt: skip
        try:
            serving = httpx.get(f"{auto_url}/readyz", timeout=HTTP_TIMEOUT_S).json()["model"]["serving"]
            z_torch = torch.from_numpy(z)

            def run_torch() -> np.ndarray:
                with torch.no_grad():
                    return G(z_torch).numpy()

            rest_auto, rest_base = rest_runner(auto_url, args.batch), rest_runner(base_url, args.batch)
            singles = singles_runner(auto_url, args.clients, args.requests)
            raw = {name: raw_runner(e, z, pool) for name, e in engines.items()}

            # Warm-up (first runs allocate), and each path's largest 8-bit difference from ORT fp32 one stream.
            reference = to_uint8(npy(rest_base())[:, 0]).astype(np.int16)
            grey = {name: int(np.abs(to_uint8(fn()[:, 0]) - reference).max()) for name, fn in raw.items()}
            grey["REST auto"] = int(np.abs(to_uint8(npy(rest_auto())[:, 0]) - reference).max())
            run_torch()
            singles()

            n_single = args.clients * args.requests
            rest_name = (
                f"REST count={args.batch} auto ({serving['engine']} {serving['precision']} x{serving['streams']})"
            )
            base_name = f"REST count={args.batch} onnxruntime fp32 x1 (before)"
            single_name = f"REST {args.clients} clients x count=1 png, auto"
            server_ms: dict[str, list[float]] = {rest_name: [], single_name: [], base_name: []}
            cases: list[tuple[str, Callable[[], float]]] = [
                ("PyTorch eager (no_grad)", lambda: timed(args.batch, run_torch))
            ]
            cases += [(f"raw {name}", partial(timed, args.batch, fn)) for name, fn in raw.items()]
            cases += [
                (rest_name, lambda: timed(args.batch, rest_auto, auto.pid, server_ms[rest_name])),
                (single_name, lambda: timed(n_single, singles, auto.pid, server_ms[single_name])),
                (base_name, lambda: timed(args.batch, rest_base, base.pid, server_ms[base_name])),
            ]
            results: dict[str, list[float]] = {name: [] for name, _ in cases}
            for r in range(args.rounds):
                order = cases[r % len(cases) :] + cases[: r % len(cases)]
                for name, fn in order:
                    time.sleep(SETTLE_S)
                    results[name].append(fn())
                print(f"round {r + 1}/{args.rounds} done", flush=True)
        finally:
            stop_api(auto)
            stop_api(base)
            stop_embedded(home / "redis")  # only when the API had to start one
            pool.shutdown()

    best = {name: max(v) for name, v in results.items()}
    raw_names = [f"raw {name}" for name in raw]
    best_raw = max(raw_names, key=lambda n: best[n])
    print()
    print(f"model: {spec.architecture} {spec.image_size}px, generator {params:,} parameters (untrained)")
    print(f"CPU: {cpu_description()}; {cores} CPUs for this process")
    print(f"onnxruntime {ort.__version__} (CPUExecutionProvider); openvino {ov.__version__}; "
          f"torch {torch.__version__}")  # fmt: skip
    print(f"API auto calibration chose: {serving['engine']} {serving['precision']} x{serving['streams']} "
          f"({serving['reason']}, {serving['calibration_s']:.2f} s)")  # fmt: skip
    print(f"{'':<58}{'best img/s':>11}{'median':>9}{'grey levels vs ORT fp32':>25}{'API CPU ms/img':>16}")
    for name, _ in cases:
        key = name.removeprefix("raw ") if name.startswith("raw ") else ("REST auto" if name == rest_name else "")
        diff = str(grey[key]) if key in grey else ""
        cpu = f"{statistics.median(server_ms[name]):.2f}" if name in server_ms else ""
        print(f"{name:<58}{best[name]:>11.2f}{statistics.median(results[name]):>9.2f}{diff:>25}{cpu:>16}")
    ok = True
    for label, num, den, target in [
        (f"REST count={args.batch} / best raw setting ({best_raw.removeprefix('raw ')})", rest_name, best_raw, 0.9),
        (f"{args.clients} x count=1 / REST count={args.batch}", single_name, rest_name, 0.8),
        (f"REST count={args.batch} auto / before (ORT fp32 x1)", rest_name, base_name, 3.0),
    ]:
        ratio = best[num] / best[den]
        ok &= ratio >= target
        print(f"{label}: {ratio:.3f} (target >= {target:g}): {'PASS' if ratio >= target else 'FAIL'}")
    print(f"total runtime {time.perf_counter() - t_start:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
