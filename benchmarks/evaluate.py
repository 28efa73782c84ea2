"""Time of a full quality report: 500 synthetic and 200 real images at 128 px (target: under 3 minutes).

One model (the report's ``dcgan-seed`` network, 128 px, untrained: speed does not depend on the
weights), real slices derived from the bundled MNI152 demo slices (seeded shifts, flips, gain and
noise, so every image is distinct), and one call of ``models.quality.evaluation.evaluate`` exactly as the
worker makes it after training, then the HTML page the API serves. Printed: the seconds of each
part (synthesis through ONNX Runtime, each metric, plots, HTML) with its share of the whole, and
the whole against the 180 s target on this machine.

FID and KID run only with ``--fid-weights PATH`` (a TorchScript Inception such as
``inception-2015-12-05.pt``; never downloaded); otherwise they are listed as not computed.

    python benchmarks/evaluate.py [--synthetic 500] [--real 200] [--train 800] [--fid-weights PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from bench_model import SPEC, publish_bench_model
from PIL import Image

from models.platform.sampling import choose_providers
from models.platform.store import Store
from models.quality.evaluation import EvalConfig, RealImages, evaluate
from models.report.page import render

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo" / "mni152_axial"
TARGET_S = 180.0


def real_slices(count: int, seed: int) -> np.ndarray:
    """``count`` distinct uint8 256 px slices from the demo set: seeded shift, flip, gain and noise."""
    base = np.stack([np.asarray(Image.open(p).convert("L").resize((256, 256))) for p in sorted(DEMO.glob("*.png"))])
    rng = np.random.default_rng(seed)
    out = np.empty((count, 256, 256), np.uint8)
    for i in range(count):
        img = base[i % len(base)].astype(np.float32)
        img = np.roll(img, tuple(rng.integers(-10, 11, 2)), axis=(0, 1))
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = img * rng.uniform(0.9, 1.1) + rng.normal(0, 3, img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", type=int, default=500)
    parser.add_argument("--real", type=int, default=200, help="held-out real images")
    parser.add_argument("--train", type=int, default=800, help="training images (memorization searches them all)")
    parser.add_argument("--fid-weights", default=None, help="TorchScript Inception for FID and KID")
    parser.add_argument("--provider", default="auto", help="DRAWAI_ONNX_PROVIDER for synthesis")
    args = parser.parse_args()

    real = real_slices(args.real + args.train, seed=0)
    with tempfile.TemporaryDirectory(prefix="drawai-bench-eval-") as tmp:
        store = Store(Path(tmp) / "home").ensure()
        _, version, _ = publish_bench_model(store)
        config = EvalConfig(
            synthetic_count=args.synthetic,
            fid_weights=Path(args.fid_weights) if args.fid_weights else None,
            providers=choose_providers(args.provider),
        )
        out = Path(tmp) / "report"
        t0 = time.perf_counter()
        report = evaluate(
            store.model_dir(version),
            out,
            RealImages(real[: args.real], "benchmark held-out", real[args.real :], "benchmark training"),
            config,
        )
        t1 = time.perf_counter()
        page = render(report, out)
        html_s = time.perf_counter() - t1
        total = time.perf_counter() - t0

    seconds = report["seconds"]
    rows = [("synthesis (ONNX Runtime)", seconds["synthesis"])]
    for name, values in report["metrics"].items():
        label = name if values["computed"] else f"{name} (not computed: {values['reason'][:40]}...)"
        rows.append((label, values["seconds"]))
    rows += [("plots", seconds["plots"]), ("HTML page", html_s)]
    provider = report["data"]["synthetic"]["provider"]
    print(f"model: {SPEC.architecture} {SPEC.image_size}px (untrained); ONNX Runtime provider {provider}")
    print(
        f"images: {args.synthetic} synthetic, {args.real} held-out real, {args.train} training, at {SPEC.image_size} px"
    )
    print(
        f"machine: {os.cpu_count()} CPUs; torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"onnxruntime {ort.__version__}"
    )
    print(f"{'part':<64}{'seconds':>9}{'share':>8}")
    for label, s in rows:
        print(f"{label:<64}{s:>9.2f}{s / total:>8.1%}")
    print(f"{'total (evaluate + HTML)':<64}{total:>9.2f}")
    print(f"HTML page: {len(page) / 1024:.0f} KiB, {page.count('data:image/png')} embedded images")
    ratio = total / TARGET_S
    verdict = "PASS" if ratio < 1 else "FAIL"
    print(f"total / target ({TARGET_S:.0f} s): {ratio:.3f} (target < 1): {verdict}")
    sys.exit(0 if ratio < 1 else 1)


if __name__ == "__main__":
    main()
