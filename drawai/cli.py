"""``drawai``: the command line. The only module that prints."""

from __future__ import annotations

import argparse
import io
import logging
import shutil
import signal
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from models.settings import get_settings

DEMO_DATA = Path(__file__).resolve().parent.parent / "data" / "demo" / "mni152_axial"
# Sized for two CPU cores: a small DCGAN at 64 px trains in a few minutes.
DEMO_SPEC: dict[str, Any] = {
    "architecture": "dcgan",
    "image_size": 64,
    "width": 32,
    "epochs": 300,
    "batch_size": 16,
    "augment": True,
    "seed": 7,
    "activate": True,
}


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll would bury the progress bar


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.main import run_worker

    run_worker(get_settings(), burst=args.burst, name=args.name)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run("service.main:create_app", factory=True, host=args.host, port=args.port)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from drawai.stack import Stack

    stack = Stack(get_settings(), args.host, args.port)
    stack.handle_signals()
    stack.start()
    try:
        stack.wait_ready()
        print(f"Draw.AI is up on {stack.url} (Ctrl-C stops it)", flush=True)
        return stack.wait()
    finally:
        stack.stop()


def _zip_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(folder.glob("*.png")):
            zf.write(p, p.name)
    return buf.getvalue()


def _follow(client: Any, job_id: str) -> dict[str, Any]:
    """Poll a job with a progress bar until it ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, TextColumn("{task.fields[losses]}")) as bar:
        task = bar.add_task("training", total=None, losses="")
        while True:
            job = client.get(f"/jobs/{job_id}").raise_for_status().json()
            p = job.get("progress") or {}
            losses = f"D {p['d_loss']:.3f}  G {p['g_loss']:.3f}" if p.get("d_loss") is not None else ""
            phase = f"{p.get('phase', job['status'])} epoch {p.get('epoch', 0)}/{p.get('epochs', '?')}"
            bar.update(task, total=p.get("steps") or None, completed=p.get("step", 0), losses=losses, description=phase)
            if job["status"] in ("finished", "failed", "canceled"):
                return dict(job)
            time.sleep(0.5)


def _write_demo_outputs(client: Any, model_dir: Path, out: Path) -> list[Path]:
    """16 synthetic slices (PNGs with provenance), their contact sheet, and the training samples."""
    images = out / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True)
    r = client.post("/generate", params={"count": 16, "seed": 0, "format": "zip"}).raise_for_status()
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = [n for n in zf.namelist() if n.endswith(".png")]
        for name in names:
            (images / Path(name).name).write_bytes(zf.read(name))
        (images / "manifest.json").write_bytes(zf.read("manifest.json"))
    grid = out / "grid.png"
    r = client.post("/generate", params={"count": 16, "seed": 0, "format": "grid"}).raise_for_status()
    grid.write_bytes(r.content)
    samples = out / "training_samples.png"
    shutil.copyfile(model_dir / "samples.png", samples)
    return [images, grid, samples]


def cmd_demo(args: argparse.Namespace) -> int:
    import httpx

    from drawai.stack import Stack

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stack = Stack(get_settings(), "127.0.0.1", args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on the way out
    stack.start()
    try:
        stack.wait_ready()
        with httpx.Client(base_url=stack.url, timeout=120) as client:
            files = {"file": ("mni152_axial.zip", _zip_folder(DEMO_DATA), "application/zip")}
            ds = client.post("/datasets", files=files, data={"name": "mni152-axial-demo"}).raise_for_status().json()
            print(f"dataset {ds['id']}: {ds['images']} real axial T1 slices (MNI ICBM152 2009a)")
            spec = {**DEMO_SPEC, "dataset": ds["id"], "epochs": args.epochs}
            job = client.post("/jobs/train", json=spec).raise_for_status().json()
            print(f"training job {job['id']}: {spec['architecture']} {spec['image_size']} px, {spec['epochs']} epochs")
            job = _follow(client, job["id"])
            if job["status"] != "finished":
                print(f"job {job['status']}: {job.get('error')}", file=sys.stderr)
                return 1
            version = job["model_version"]
            client.post(f"/models/{version}/activate").raise_for_status()  # this API process serves it now
            print(f"model {version} trained and active")
            paths = _write_demo_outputs(client, stack.home / "models" / version, out)
        print("wrote:")
        for p in paths:
            print(f"  {p}")
        return 0
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drawai", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("worker", help="run a training worker on the Redis queue")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--name", default=None)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("api", help="run the HTTP API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("up", help="run Redis, a worker and the API together")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("demo", help="train on the bundled real MRI slices and write samples")
    p.add_argument("--out", default="drawai-demo")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--epochs", type=int, default=DEMO_SPEC["epochs"])
    p.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    _logging(args.log_level)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
