"""``drawai evaluate``: the quality report of a model version against any set of real images, into a folder.

Runs locally (PyTorch, the worker's ``train`` extra) on the store under ``DRAWAI_HOME``: the same
``models.quality.evaluation.evaluate`` the worker runs after training, then the same HTML page the API
serves. The real side is ``--real PATH`` (anything ``POST /datasets`` reads: a folder, an archive,
a NIfTI volume, DICOM files) or, without it, the held-out split of the model's own dataset; the
training side is the dataset's training split when the dataset is still in the store.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from models.platform.errors import NotFoundError
from models.platform.settings import Settings
from models.platform.store import Store


class EvaluateError(Exception):
    """A user error: printed as one line, exit status 1."""


def read_real(path: Path, settings: Settings, max_images: int, seed: int) -> tuple[np.ndarray, list[str], int, int]:
    """The slices of ``path`` as uint8 ``[N, S, S]`` (a seeded reservoir sample of ``max_images``).

    Returns (images, each image's class: its folder as ``POST /datasets`` names classes, slices read, files skipped).
    """
    from models.data.sources import iter_slices
    from models.platform.errors import Refused

    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    names: list[str] = []
    skipped: list[dict[str, str]] = []
    seen = 0
    try:
        with tempfile.TemporaryDirectory(prefix="drawai-evaluate-") as work:
            for item in iter_slices(path, settings, skipped, Path(work)):
                seen += 1
                if len(kept) < max_images:
                    kept.append(item.pixels)
                    names.append(item.class_name)
                elif (j := int(rng.integers(seen))) < max_images:
                    kept[j], names[j] = item.pixels, item.class_name
    except Refused as exc:
        raise EvaluateError(f"{path}: {exc.detail}") from None
    if len(kept) < 2:
        raise EvaluateError(f"{path}: {len(kept)} usable real image(s) ({len(skipped)} files skipped); at least 2")
    return np.stack(kept), names, seen, len(skipped)


def class_labels(names: list[str], manifest: Any) -> np.ndarray | None:
    """The model's class index of each real image, when the images' classes are the model's (else None)."""
    from models.platform.schemas import class_indices

    index = class_indices(manifest.classes)
    if len(index) < 2 or not set(names) <= set(index):
        return None
    return np.array([index[n] for n in names], dtype=np.int64)


def _model_dir(store: Store, model: str) -> Path:
    """A version in the store (``v3``) or a version folder on disk (holding model.json and generator.onnx)."""
    folder = Path(model)
    if (folder / "model.json").is_file():
        return folder
    try:
        store.get_manifest(model)
    except NotFoundError:
        known = ", ".join(m.version for m in store.list_models()) or "none"
        raise EvaluateError(f"no model version {model!r} in {store.home} (versions: {known})") from None
    return store.model_dir(model)


def run(args: argparse.Namespace, settings: Settings, console: Any) -> dict[str, Any]:
    """Evaluate, write report.json, plots/ and report.html into ``args.out``; return the report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from models.gan.training import select_device
    from models.platform.sampling import choose_providers
    from models.platform.schemas import ModelManifest
    from models.quality.evaluation import EvalConfig, RealImages, evaluate
    from models.quality.metrics import METRICS
    from models.report.page import render

    metrics = tuple(args.metrics.split(",")) if args.metrics else EvalConfig.metrics
    if unknown := sorted(set(metrics) - set(METRICS)):
        raise EvaluateError(f"unknown metrics {unknown}; known: {', '.join(sorted(METRICS))}")
    if args.count is not None and args.count < 2:
        raise EvaluateError("--count must be at least 2")
    store = Store(settings.home)
    model_dir = _model_dir(store, args.model)
    manifest = ModelManifest.model_validate_json((model_dir / "model.json").read_bytes())
    train = train_source = train_labels = heldout_labels = None
    labelled = len(manifest.classes) > 1
    try:
        train, train_labels = store.load_dataset(manifest.dataset, split="train")
        train_source = f"training split of dataset {manifest.dataset}"
    except NotFoundError:
        console.print(f"dataset {manifest.dataset} is not in {store.home}: memorization will not be computed")
    if args.real:
        real = Path(args.real)
        if not real.exists():
            raise EvaluateError(f"{real}: no such file or folder")
        with console.status(f"reading real images from {real}"):
            heldout, names, seen, skipped = read_real(real, settings, args.max_real, args.seed)
        heldout_labels = class_labels(names, manifest)
        console.print(f"real images: {len(heldout)} of {seen} slices from {real} ({skipped} files skipped)")
        source = f"{real.name} ({len(heldout)} of {seen} slices)"
    elif train is not None:
        heldout, heldout_labels = store.load_dataset(manifest.dataset, split="heldout")
        source = f"held-out split of dataset {manifest.dataset}, never used in training"
    else:
        raise EvaluateError("give --real PATH: the model's dataset (and its held-out split) is not in the store")

    out = Path(args.out or f"drawai-report-{manifest.version}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = EvalConfig(
        synthetic_count=args.count or settings.eval_synthetic_count,
        seed=args.seed,
        metrics=metrics,
        fid_weights=Path(args.fid_weights) if args.fid_weights else settings.fid_weights,
        device=select_device(settings.device).type,
        providers=choose_providers(settings.onnx_provider),
        utility_budget_s=settings.utility_budget_s,
    )
    samples = store.job_dir(manifest.job_id) / "samples"
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("evaluating", total=None)
        report = evaluate(
            model_dir,
            out,
            RealImages(
                heldout,
                source,
                train,
                train_source,
                label="given" if args.real else "held-out",
                heldout_labels=heldout_labels if labelled else None,
                train_labels=train_labels if labelled else None,
            ),
            config,
            samples_dir=samples if samples.is_dir() else None,
            progress_fn=lambda what, done, total: bar.update(task, description=what, completed=done, total=total),
        )
        bar.update(task, description="done", completed=bar.tasks[0].total)
    (out / "report.html").write_text(render(report, out), encoding="utf-8")
    report["_out"] = str(out)
    return report


def print_summary(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    from models.report.summary import summarize

    table = Table("metric", "synthetic", "reference", "reading", title=f"model {report['model']['version']}")
    for name, row in summarize(report["metrics"]).items():
        if row["computed"]:
            table.add_row(name, f"{row['value']:.4g}", f"{row['reference']:.4g}", row["reading"])
        else:
            table.add_row(name, "-", "-", f"not computed: {row['reason']}")
    console.print(table)
    print_classes(console, report)
    for note in report.get("notes", []):
        console.print(f"note: {note}")
    out = Path(report["_out"])
    console.print(f"wrote {out / 'report.html'}\n      {out / 'report.json'}\n      {out / 'plots'}/")


def print_classes(console: Any, report: dict[str, Any]) -> None:
    """A conditional model's per-class headline and the utility test's verdict, when the report has them."""
    from rich.table import Table

    classes = report.get("classes") or {}
    if classes:
        table = Table("class", "c2st AUC (ref)", "MS-SSIM syn (real)", "copies (ref)", "collapsed", title="per class")
        for name, section in classes.items():
            if not section.get("computed"):
                table.add_row(name, "-", "-", "-", f"not computed: {section.get('reason')}")
                continue
            m = section["metrics"]
            table.add_row(name, _pair(m, "c2st_auc", "synthetic_vs_real", "real_vs_real"),
                          _pair(m, "diversity_msssim", "synthetic", "real"),
                          _pair(m, "memorization", "likely_copies_fraction", "reference_fraction"),
                          "yes" if section.get("collapsed") else "no")  # fmt: skip
        console.print(table)
    utility = report.get("utility")
    if utility:
        console.print(f"utility: {utility.get('summary') or 'not tested: ' + str(utility.get('why'))}")
        if utility.get("caution"):
            console.print(f"         {utility['caution']}")


def _pair(metrics: dict[str, Any], name: str, value: str, reference: str) -> str:
    m = metrics.get(name) or {}
    if not m.get("computed"):
        return "-"
    return f"{m[value]:.3f} ({m[reference]:.3f})"
