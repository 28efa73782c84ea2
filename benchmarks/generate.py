"""Images/s of generation: PyTorch eager, a raw ONNX Runtime session, and the API over HTTP.

One model (the report's ``dcgan-seed`` network, 128 px, 27M-parameter generator; untrained
weights: speed does not depend on them), one latent batch, four ways, side by side in one run:

1. PyTorch eager, ``torch.no_grad()``, one batch of ``--batch`` (64) latents;
2. a raw ONNX Runtime session on the exported file (the providers the API picks), same batch;
3. ``POST /generate?count=64&format=npy`` against a real ``uvicorn`` server, end to end (HTTP,
   latents, dynamic batcher, inference, ``.npy`` encoding, transfer);
4. ``--clients`` (16) threads, each sending ``--requests`` ``POST /generate?count=1&format=png``
   one after another, the server's dynamic batcher gathering them (images/s over the wall time
   from the first request to the last answer).

The four run in rotating order each round, so noise on a shared machine hits all alike; the best
images/s over the rounds is reported for each (noise only ever slows a run down), then the
ratios: REST count=64 / raw ORT (target >= 0.85: the API adds little to a batch) and 16 x count=1
/ REST count=64 (target >= 0.7: batching recovers most of a batch's throughput from single-image
requests).

    python benchmarks/generate.py [--rounds 5] [--requests 4] [--clients 16] [--batch 64]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import torch
from bench_model import SPEC, publish_bench_model

from models.platform.redisconn import stop_embedded
from models.platform.sampling import latents
from models.platform.store import Store
from service.inference import choose_providers

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 180.0
HTTP_TIMEOUT_S = 600.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(home: Path, log: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "DRAWAI_HOME": str(home),
        "DRAWAI_ONNX_PROVIDER": args.provider,
        "DRAWAI_BATCH_MAX_SIZE": str(args.batch_max_size),
        "DRAWAI_BATCH_MAX_WAIT_MS": str(args.batch_max_wait_ms),
        "PYTHONPATH": str(ROOT),
    }
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
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the API did not start in {STARTUP_TIMEOUT_S:g} s")
        time.sleep(0.2)


def stop_api(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def timed(n_images: int, fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return n_images / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="images per batch (PyTorch, ORT, REST count)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent count=1 clients")
    parser.add_argument("--requests", type=int, default=4, help="count=1 requests per client per round")
    parser.add_argument("--provider", default="auto", help="DRAWAI_ONNX_PROVIDER of the raw session and the API")
    parser.add_argument("--batch-max-size", type=int, default=64, help="the API's DRAWAI_BATCH_MAX_SIZE")
    parser.add_argument("--batch-max-wait-ms", type=float, default=5.0, help="the API's DRAWAI_BATCH_MAX_WAIT_MS")
    args = parser.parse_args()
    t_start = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="drawai-bench-") as tmp:
        home = Path(tmp) / "home"
        store = Store(home).ensure()
        G, version, onnx_path = publish_bench_model(store)
        params = sum(p.numel() for p in G.parameters())

        providers = choose_providers(args.provider)
        opts = ort.SessionOptions()  # the API's session options (service.inference.load_model)
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(onnx_path), opts, providers=providers)
        z = latents(SPEC.latent_dim, list(range(args.batch)))  # the latents of seed=0, count=batch
        z_torch = torch.from_numpy(z)

        proc, url = start_api(home, Path(tmp) / "api.log", args)
        try:
            api = httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S)
            activated = api.post(f"/models/{version}/activate")
            activated.raise_for_status()
            clients = [httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) for _ in range(args.clients)]
            pool = ThreadPoolExecutor(args.clients)

            def run_torch() -> np.ndarray:
                with torch.no_grad():
                    return G(z_torch).numpy()

            def run_ort() -> np.ndarray:
                return np.asarray(session.run(["image"], {"z": z})[0])

            def run_rest() -> np.ndarray:
                r = api.post("/generate", params={"count": args.batch, "seed": 0, "format": "npy"})
                r.raise_for_status()
                return np.load(io.BytesIO(r.content), allow_pickle=False)

            def run_singles(requests: int) -> None:
                barrier = threading.Barrier(args.clients + 1)

                def client_loop(i: int) -> None:
                    barrier.wait()
                    for k in range(requests):
                        seed = 1_000_000 + (i * requests + k)
                        r = clients[i].post("/generate", params={"count": 1, "seed": seed, "format": "png"})
                        r.raise_for_status()
                        assert r.content.startswith(b"\x89PNG")

                futures = [pool.submit(client_loop, i) for i in range(args.clients)]
                barrier.wait()
                for f in futures:
                    f.result()

            # Warm-up (first runs allocate), and a check that all three paths compute the same images.
            expected = run_ort()
            torch_diff = float(np.abs(run_torch() - expected).max())
            rest_diff = float(np.abs(run_rest() - expected).max())
            run_singles(1)

            n_single = args.clients * args.requests
            cases: list[tuple[str, Callable[[], float]]] = [
                (f"PyTorch eager (no_grad, batch {args.batch})", lambda: timed(args.batch, run_torch)),
                (f"raw ONNX Runtime session (batch {args.batch})", lambda: timed(args.batch, run_ort)),
                (f"POST /generate count={args.batch} format=npy", lambda: timed(args.batch, run_rest)),
                (
                    f"{args.clients} clients x {args.requests} x count=1 png",
                    lambda: timed(n_single, lambda: run_singles(args.requests)),
                ),
            ]
            results: dict[str, list[float]] = {name: [] for name, _ in cases}
            for r in range(args.rounds):
                order = cases[r % len(cases) :] + cases[: r % len(cases)]
                for name, fn in order:
                    results[name].append(fn())
                line = "  ".join(f"{results[name][-1]:6.2f}" for name, _ in cases)
                print(f"round {r + 1}/{args.rounds} images/s: {line}", flush=True)

            pool.shutdown()
            for c in clients:
                c.close()
            api.close()
        finally:
            stop_api(proc)
            stop_embedded(home / "redis")  # only when the API had to start one

    best = {name: max(v) for name, v in results.items()}
    names = [name for name, _ in cases]
    torch_name, ort_name, rest_name, single_name = names
    print()
    print(f"model: {SPEC.architecture} {SPEC.image_size}px, generator {params:,} parameters (untrained)")
    print(
        f"machine: {os.cpu_count()} CPUs; torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"onnxruntime {ort.__version__}"
    )
    print(f"ONNX Runtime provider: raw session {session.get_providers()[0]}; API {activated.json()['provider']}")
    print(
        f"API batching: DRAWAI_BATCH_MAX_SIZE={args.batch_max_size} DRAWAI_BATCH_MAX_WAIT_MS={args.batch_max_wait_ms}"
    )
    print(f"max |difference| vs raw ORT: PyTorch {torch_diff:.2g}, REST {rest_diff:.2g}")
    print(f"{'':<44}{'best img/s':>11}{'median':>9}{'ms/image':>10}")
    for name in names:
        print(f"{name:<44}{best[name]:>11.2f}{statistics.median(results[name]):>9.2f}{1000 / best[name]:>10.1f}")
    print(f"ONNX Runtime / PyTorch eager: {best[ort_name] / best[torch_name]:.3f}")
    ok = True
    for label, num, den, target in [
        (f"REST count={args.batch} / raw ORT", rest_name, ort_name, 0.85),
        (f"{args.clients}x count=1 / REST count={args.batch}", single_name, rest_name, 0.7),
    ]:
        ratio = best[num] / best[den]
        ok &= ratio >= target
        print(f"{label}: {ratio:.3f} (target >= {target}): {'PASS' if ratio >= target else 'FAIL'}")
    print(f"total runtime {time.perf_counter() - t_start:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
