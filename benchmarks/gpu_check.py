"""The GPU check's work (run by ``benchmarks/gpu_check.sh``, which sets up the environment): one table.

1. Training: the ``standard`` preset's network at 128 px in mixed precision on CUDA, in a child process that is
   SIGKILLed after its second checkpoint; a second child resumes from that checkpoint on the GPU and finishes.
2. Inference on the trained generator, batch 64: PyTorch eager fp32 and autocast, ONNX Runtime's CUDA provider
   fp32 (IO binding) and with an fp16 graph (``service.engines``), and what calibration picks.
3. ``POST /generate?count=64`` through a real API process whose engine runs on the GPU.
4. The worker's GPU memory metrics (``worker.metrics.GpuCollector``, NVML).

Exit 0 when every check passed, 1 otherwise, 2 without CUDA.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHECKPOINT_EVERY = 10
KIMG = 1.5  # images shown: about 47 steps of 32 at 128 px
Row = tuple[str, str, bool]


def spec() -> Any:
    from models.platform.schemas import TrainSpec

    return TrainSpec(dataset="gpu-check", preset="standard", kimg=KIMG, snapshots=0)


def child(workdir: Path) -> None:
    """Train (or resume) in this process; print one JSON line per progress report, and the result at the end."""
    from models.gan.training import train

    images = np.random.default_rng(0).integers(0, 256, (256, 128, 128), dtype=np.uint8)
    t0 = time.perf_counter()
    result = train(spec(), images, workdir, device=torch.device("cuda"), checkpoint_every=CHECKPOINT_EVERY,
                   progress_fn=lambda p: print(json.dumps({"step": p["step"]}), flush=True))  # fmt: skip
    torch.save(result.generator.state_dict(), workdir / "G.pt")
    peak = torch.cuda.max_memory_allocated() / 2**20
    seconds = time.perf_counter() - t0
    print(json.dumps({"done": True, "step": result.step, "resumed_from": result.resumed_from_step,
                      "precision": result.precision, "seconds": seconds, "peak_mib": peak}))  # fmt: skip


def train_with_kill(workdir: Path) -> tuple[list[Row], Any]:
    cmd = [sys.executable, __file__, "--child", str(workdir)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    killed_at = None
    for line in first.stdout:
        step = json.loads(line).get("step", 0)
        if step >= 2 * CHECKPOINT_EVERY:
            first.send_signal(signal.SIGKILL)
            killed_at = step
            break
    first.wait(timeout=60)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    done = json.loads(out.stdout.strip().splitlines()[-1])
    resumed = done.get("resumed_from") or 0
    G = build_generator()
    G.load_state_dict(torch.load(workdir / "G.pt", map_location="cpu"))
    rows = [
        ("train 128px standard, CUDA", f"{done['precision']}, {done['step']} steps, peak {done['peak_mib']:.0f} MiB",
         done["precision"] in ("bf16", "fp16")),
        ("SIGKILL then resume on the GPU", f"killed at {killed_at}, resumed from {resumed}, finished {done['step']}",
         killed_at is not None and CHECKPOINT_EVERY <= resumed <= killed_at and done["step"] > resumed),
        ("training images/s after resume", f"{(done['step'] - resumed) * 32 / done['seconds']:.1f}", True),
    ]  # fmt: skip
    return rows, G


def build_generator() -> Any:
    from models.gan.networks import build

    G, _ = build(spec())
    return G


def best_rate(fn: Any, n: int, rounds: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def inference_rows(G: Any, onnx_path: Path) -> list[Row]:
    from models.platform.sampling import CPU, CUDA, latents
    from service.engines import Setting, open_engine
    from service.engines.calibration import Preferences, calibrate

    z = latents(100, list(range(64)))
    zt = torch.from_numpy(z).cuda()
    Gc = G.cuda().eval()
    rows: list[Row] = []
    with torch.no_grad():
        rows.append(("torch eager fp32 img/s", f"{best_rate(lambda: Gc(zt), 64):.0f}", True))
        with torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16):
            rows.append(("torch eager autocast img/s", f"{best_rate(lambda: Gc(zt), 64):.0f}", True))
    for precision in ("fp32", "fp16"):
        engine = open_engine(onnx_path, Setting("onnxruntime", precision, 1), [CUDA, CPU], os.cpu_count() or 1)
        rate = best_rate(lambda e=engine: e.run({"z": z}), 64)
        rows.append((f"ONNX Runtime {engine.device} {precision} img/s", f"{rate:.0f}", engine.device == CUDA))
    _, serving = calibrate(onnx_path, 100, 0, Preferences(providers=(CUDA, CPU)))
    rows.append(("calibration picks", f"{serving.engine} {serving.precision} x{serving.streams} on {serving.device}",
                 serving.device == CUDA))  # fmt: skip
    return rows


def api_rows(home: Path) -> list[Row]:
    import httpx
    from generate import start_api, stop_api

    proc, url = start_api(home, home / "api.log", {"DRAWAI_ONNX_PROVIDER": "auto"})
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            served = c.get("/readyz").json()["model"]

            def post() -> None:
                r = c.post("/generate", params={"count": 64, "seed": 0, "format": "npy"})
                r.raise_for_status()
                np.load(io.BytesIO(r.content))

            rate = best_rate(post, 64)
    finally:
        stop_api(proc)
    return [("POST /generate count=64 on " + served["provider"], f"{rate:.0f} img/s", "CUDA" in served["provider"])]


def gpu_memory_rows() -> list[Row]:
    from worker.metrics import GpuCollector

    collector = GpuCollector()
    samples = [s for m in collector.collect() for s in m.samples]
    text = ", ".join(f"{s.name}{{gpu={s.labels.get('gpu')}}}={s.value / 2**20:.0f} MiB" for s in samples)
    return [("worker GPU memory metrics (NVML)", text or "none", collector.available() and bool(samples))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    if not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device (a CPU build, or no driver): nothing to check", file=sys.stderr)
        sys.exit(2)
    from bench_model import publish_bench_model

    from models.platform.store import Store

    t0 = time.perf_counter()
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    with tempfile.TemporaryDirectory(prefix="drawai-gpu-check-") as tmp:
        rows, G = train_with_kill(Path(tmp) / "job")
        store = Store(Path(tmp) / "home").ensure()
        _, _, onnx_path = publish_bench_model(store, spec(), G)
        rows += inference_rows(G, onnx_path)
        rows += api_rows(store.home)
        rows += gpu_memory_rows()
    width = max(len(r[0]) for r in rows) + 2
    print(f"\n{'check':<{width}}{'result':<70}ok")
    for name, value, ok in rows:
        print(f"{name:<{width}}{value:<70}{'PASS' if ok else 'FAIL'}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    sys.exit(0 if all(ok for _, _, ok in rows) else 1)


if __name__ == "__main__":
    main()
