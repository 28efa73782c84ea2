"""``drawai demo``: the whole service on the bundled real MRI slices, from upload to synthetic slices.

It starts the stack (``drawai up``: Redis, a worker, the API), uploads the demo data, trains the ``quick``
preset with a progress bar, prints the quality headline and writes synthetic slices, their contact sheet,
the training samples and the quality report into ``--out``.

``--conditional`` uses the labelled demo instead (``data/demo/mni152_lesions``: ``no/`` template slices and
``yes/`` slices with a **simulated** lesion, see ``data/demo/NOTICE.md``), trains one class-conditional model,
and prints the per-class headline and the utility test's verdict (does adding synthetic ``yes`` slices help
a small classifier?); it writes one contact sheet per class.
"""

from __future__ import annotations

import argparse
import io
import shutil
import signal
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from models.platform.settings import Settings

DATA = Path(__file__).resolve().parent.parent / "data" / "demo"
DEMO_DATA = DATA / "mni152_axial"
LABELLED_DEMO_DATA = DATA / "mni152_lesions"
# The "quick" preset (models.platform.schemas.PRESETS): the best recipe benchmarks/quality.py measured for at
# most 5 minutes on two CPU cores.
DEMO_SPEC: dict[str, Any] = {"preset": "quick", "seed": 7, "activate": True}


def zip_folder(folder: Path) -> bytes:
    """The PNGs under ``folder``, keeping class subfolders (``yes/slice_028.png``) as a user's archive would."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(folder.rglob("*.png")):
            zf.write(p, p.relative_to(folder).as_posix())
    return buf.getvalue()


def follow(client: Any, job_id: str) -> dict[str, Any]:
    """Poll a job with a progress bar until it ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, TextColumn("{task.fields[losses]}")) as bar:
        task = bar.add_task("training", total=None, losses="")
        while True:
            job = client.get(f"/jobs/{job_id}").raise_for_status().json()
            p = job.get("progress") or {}
            losses = f"D {p['d_loss']:.3f}  G {p['g_loss']:.3f}" if p.get("d_loss") is not None else ""
            if p.get("augment_p") is not None:
                losses += f"  aug p {p['augment_p']:.2f}"
            if p.get("snapshot"):
                losses += f"  best snapshot @{p['snapshot']['step']} (c2st {p['snapshot']['c2st_auc']:.2f})"
            if p.get("warning"):
                losses += f"  [red]{p['warning']}[/red]"
            phase = f"{p.get('phase', job['status'])} epoch {p.get('epoch', 0)}/{p.get('epochs', '?')}"
            if p.get("detail"):  # evaluating: the metric being computed
                phase = f"{p['phase']}: {p['detail']}"
            bar.update(task, total=p.get("steps") or None, completed=p.get("step", 0), losses=losses, description=phase)
            if job["status"] in ("finished", "failed", "canceled"):
                return dict(job)
            time.sleep(0.5)


def write_outputs(client: Any, model_dir: Path, out: Path, classes: list[str] | None) -> list[Path]:
    """16 synthetic slices (PNGs with provenance), their contact sheet (one per class for a conditional model),
    the training samples and the quality report."""
    images = out / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True)
    r = client.post("/generate", params={"count": 16, "seed": 0, "format": "zip"}).raise_for_status()
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        for name in (n for n in zf.namelist() if n.endswith(".png")):
            (images / Path(name).name).write_bytes(zf.read(name))
        (images / "manifest.json").write_bytes(zf.read("manifest.json"))
    paths = [images]
    per_class: list[str | None] = list(classes) if classes else [None]
    for cls in per_class:
        grid = out / ("grid.png" if cls is None else f"grid_{cls}.png")
        params = {"count": 16, "seed": 0, "format": "grid", **({"label": cls} if cls else {})}
        grid.write_bytes(client.post("/generate", params=params).raise_for_status().content)
        paths.append(grid)
    samples = out / "training_samples.png"
    shutil.copyfile(model_dir / "samples.png", samples)
    report = out / "report.html"
    report.write_bytes(client.get(f"/models/{model_dir.name}/report.html").raise_for_status().content)
    return [*paths, samples, report]


def print_quality(client: Any, version: str) -> None:
    """The headline of the version's quality report, one line per metric; per class and utility when present."""
    from rich.console import Console

    from drawai.evaluate import print_classes
    from models.report.summary import summarize

    report = client.get(f"/models/{version}/report").raise_for_status().json()
    print(f"quality of {version} (synthetic vs real; reference: real vs real):")
    for name, row in summarize(report["metrics"]).items():
        if row["computed"]:
            print(f"  {name:<17} {row['value']:.4g} (reference {row['reference']:.4g}): {row['reading']}")
        else:
            print(f"  {name:<17} not computed: {row['reason']}")
    print_classes(Console(width=140), report)


def _upload(client: Any, conditional: bool) -> dict[str, Any]:
    folder, name = (LABELLED_DEMO_DATA, "mni152-lesions-demo") if conditional else (DEMO_DATA, "mni152-axial-demo")
    files = {"file": (f"{folder.name}.zip", zip_folder(folder), "application/zip")}
    ds: dict[str, Any] = client.post("/datasets", files=files, data={"name": name}).raise_for_status().json()
    what = "real axial T1 slices (MNI ICBM152 2009a)"
    if conditional:
        what += f", classes {ds['classes']} ('yes': a simulated lesion drawn in)"
    print(f"dataset {ds['id']}: {ds['images']} {what}")
    split = ds.get("split") or {}
    if split:  # one volume: held out in slabs, the slices beside them kept out (docs/datasets.md)
        print(f"  {split['train']} training, {split['heldout']} held out for the quality report, "
              f"{split.get('dropped') or 0} kept out beside the held-out slabs")  # fmt: skip
    return ds


def _train(client: Any, ds: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    spec = {**DEMO_SPEC, "dataset": ds["id"], **({"epochs": args.epochs} if args.epochs else {})}
    if args.conditional:
        spec["conditional"] = True
    job = client.post("/jobs/train", json=spec).raise_for_status().json()
    s = job["spec"]
    length = f"{s['kimg']:g} kimg" if s.get("kimg") else f"{s['epochs']} epochs"
    length += f" (at most {s['max_epochs']} epochs)" if s.get("kimg") and s.get("max_epochs") else ""
    kind = "conditional " if s.get("conditional") else ""
    print(f"training job {job['id']}: preset {s['preset_used']}, {kind}{s['architecture']} {s['image_size']} px, "
          f"{s['loss']} loss, {length}")  # fmt: skip
    return follow(client, job["id"])


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    from drawai.stack import Stack
    from drawai.upload import auth_headers

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stack = Stack(settings, "127.0.0.1", args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on the way out
    stack.start()
    try:
        stack.wait_ready()
        with httpx.Client(base_url=stack.url, timeout=120, headers=auth_headers(settings)) as client:
            ds = _upload(client, args.conditional)
            job = _train(client, ds, args)
            if job["status"] != "finished":
                print(f"job {job['status']}: {job.get('error')}", file=sys.stderr)
                return 1
            version = job["model_version"]
            client.post(f"/models/{version}/activate").raise_for_status()  # this API process serves it now
            print(f"model {version} trained and active")
            print_quality(client, version)
            classes = sorted(ds["classes"]) if args.conditional else None
            paths = write_outputs(client, stack.home / "models" / version, out, classes)
        print("wrote:")
        for p in paths:
            print(f"  {p}")
        return 0
    finally:
        stack.stop()
