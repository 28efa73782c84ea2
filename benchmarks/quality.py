"""Quality of the training recipes, side by side: each named recipe trained under one budget on each dataset.

For every dataset (``demo``: the bundled 57 MNI152 axial slices of one skull-stripped volume;
``kaggle_like``: ``data/bench/kaggle_like.zip``, slices of other heads with skull, mixed sizes and
padding, varied contrast, and a simulated-lesion minority class, see ``data/bench/NOTICE.md``), the
script ingests it exactly as ``POST /datasets`` does (same grouped held-out split), then trains every
recipe for the same number of real images shown (``--kimg``, and at most ``--max-epochs``: quick's
budget unless given; ``report`` keeps its own 10 epochs, as the seed report trained), publishes it the
way the worker does (ONNX export, parity, snapshot selection) and evaluates it against the held-out
split. It prints one table per dataset:

    recipe | minutes | c2st AUC | intensity W1 | MS-SSIM synthetic/real | memorization | snapshot

each next to its real-vs-real reference, and writes every recipe's sample grid and report into
``--out`` (``<dataset>/<recipe>/samples.png``, ``report.json``), plus ``summary.json``.

Recipes (``RECIPES``): ``report`` (the seed's dcgan-seed preset, as it is), ``old-demo`` (the recipe
``make demo`` used before the presets: DCGAN 64 px width 32, BCE, BatchNorm D, flips + translation +
cutout at p = 1, no EMA, the last snapshot), ``quick`` (the preset), ``quick-fp32`` / ``quick-bf16``
(the preset in one precision: bf16 against fp32 quality) and candidates that were measured to choose
it (``--recipes`` picks any of them).

    python benchmarks/quality.py [--datasets demo,kaggle_like] [--recipes report,old-demo,quick] [--kimg 40]
        [--max-epochs 250]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATASETS = {
    "demo": ROOT / "data" / "demo" / "mni152_axial",
    "kaggle_like": ROOT / "data" / "bench" / "kaggle_like.zip",
    # The labelled demo: no/ template slices, yes/ with a simulated lesion (data/demo/NOTICE.md).
    "demo_lesions": ROOT / "data" / "demo" / "mni152_lesions",
}
OLD_DEMO = {
    "architecture": "dcgan",
    "image_size": 64,
    "width": 32,
    "batch_size": 16,
    "loss": "bce",
    "d_norm": "batch",
    "ema": False,
    "augment": True,
    "augment_policy": "translation,cutout",
    "ada_target": None,
    "snapshots": 0,
}
RECIPES: dict[str, dict[str, Any]] = {
    "report": {"preset": "report"},
    "old-demo": {"preset": "quick", **OLD_DEMO},
    "quick": {"preset": "quick"},
    # the preset in fp32: "quick" trains in bf16 autocast on a CPU with native bf16 (precision: auto)
    "quick-fp32": {"preset": "quick", "precision": "fp32"},
    "quick-bf16": {"preset": "quick", "precision": "bf16"},
    # one class-conditional model for every class (a labelled dataset): per-class metrics and the utility test
    "quick-conditional": {"preset": "quick", "conditional": True},
    # the same with other mode-seeking weights (0: every class collapsed), and without transitional conditioning
    "quick-conditional-no-ms": {"preset": "quick", "conditional": True, "mode_seeking": 0.0},
    "quick-conditional-ms1": {"preset": "quick", "conditional": True, "mode_seeking": 1.0},
    "quick-conditional-no-transition": {"preset": "quick", "conditional": True, "cond_start": 0.0, "cond_end": 1e-6},
    # candidates measured to choose "quick" (64 px, width 32; the quick preset's fields unless named)
    "dcgan-hinge-sn-ema": {"preset": "quick", "architecture": "dcgan"},
    "old-demo-ema": {"preset": "quick", **OLD_DEMO, "ema": True},
    "dcgan-bce-bn-ema-ada": {
        "preset": "quick",
        **OLD_DEMO,
        "ema": True,
        "augment_policy": "color,translation,cutout",
        "ada_target": 0.6,
    },
    "dcgan-bce-bn-ema-ct": {
        "preset": "quick",
        **OLD_DEMO,
        "ema": True,
        "augment_policy": "color,translation",
        "ada_target": 0.6,
    },
    "dcgan-bce-bn-ema-ct-b8": {
        "preset": "quick",
        **OLD_DEMO,
        "ema": True,
        "augment_policy": "color,translation",
        "ada_target": 0.6,
        "batch_size": 8,
    },
    "fastgan-w16": {"preset": "quick", "width": 16},
    "fastgan-ct-ada": {"preset": "quick", "augment_policy": "color,translation", "ada_target": 0.6},
    "fastgan-ct": {"preset": "quick", "augment_policy": "color,translation", "ada_target": None},
    "dcgan-sn-ttur": {
        "preset": "quick",
        "architecture": "dcgan",
        "lr_g": 1e-4,
        "lr_d": 4e-4,
        "beta1": 0.0,
        "beta2": 0.9,
        "augment_policy": "color,translation",
    },
    "dcgan-wgan-gp-ema": {"preset": "quick", "architecture": "dcgan", "loss": "wgan-gp"},
    "fastgan-r1": {"preset": "quick", "r1_gamma": 0.1},
    # the quick preset with mode seeking (Mao et al. 2019) against collapse on varied sets (kaggle_like)
    "quick-ms": {"preset": "quick", "mode_seeking": 0.3},
    "quick-ms1": {"preset": "quick", "mode_seeking": 1.0},
    "quick-b8": {"preset": "quick", "batch_size": 8},  # twice the steps for the same images shown
    # the quick preset with translation only (no brightness/contrast), and with a looser cap on small sets
    "quick-t": {"preset": "quick", "augment_policy": "translation"},
    "quick-e400": {"preset": "quick", "max_epochs": 400},
    "quick-noema": {"preset": "quick", "ema": False},
    "quick-bce": {"preset": "quick", "loss": "bce"},
    "quick-lr1": {"preset": "quick", "lr_g": 1e-4, "lr_d": 1e-4},
    "quick-w64": {"preset": "quick", "width": 64},  # G: 16 channels at 64 px instead of 8
    "quick-noaug": {"preset": "quick", "augment": False},
    "quick-ada8": {"preset": "quick", "ada_target": 0.8},  # less augmentation than ADA's 0.6
    "quick-noaug-ms": {"preset": "quick", "augment": False, "mode_seeking": 0.3},  # variety back by mode seeking
}
HEADLINE = ("c2st_auc", "intensity_w1", "diversity_msssim", "memorization")


def train_and_evaluate(store: Any, settings: Any, dataset: Any, recipe: str, fields: dict[str, Any],
                       budget: dict[str, Any], seed: int, out: Path,
                       threads: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Train one recipe on one stored dataset, publish it with its report, and return the row of the table.
    ``budget``: ``kimg`` and ``max_epochs`` (None: no cap), given to every recipe that does not set its own."""
    import torch

    from models.gan.publish import publish
    from models.gan.training import train
    from models.platform.schemas import TrainSpec
    from models.quality.evaluation import EvalConfig, RealImages, evaluate
    from models.quality.snapshots import SnapshotScorer

    given = {"dataset": dataset.id, "seed": seed, **fields}
    if "epochs" not in given and fields.get("preset") != "report":
        # the same budget for every recipe but the report's own 10 epochs (given, so the preset's cap is not used)
        given = {**budget, **given}
    spec = TrainSpec.model_validate(given)
    images, labels = store.load_dataset(dataset.id, split="train")
    heldout, heldout_labels = store.load_dataset(dataset.id, split="heldout")
    workdir = out / "work"
    shutil.rmtree(workdir, ignore_errors=True)
    cond = labels if spec.conditional else None
    scorer = SnapshotScorer(images, spec.image_size, spec.latent_dim, spec.seed, cond) if spec.snapshots else None
    started = time.perf_counter()
    result = train(spec, images, workdir, labels=labels, num_classes=len(dataset.classes), device=torch.device("cpu"),
                   score_fn=scorer, checkpoint_every=10**9, threads=threads)  # fmt: skip
    minutes = (time.perf_counter() - started) / 60
    labelled = len(dataset.classes) > 1
    real = RealImages(heldout=heldout, heldout_source="held-out split", train=images, train_source="training split",
                      heldout_labels=heldout_labels if labelled else None,
                      train_labels=labels if labelled else None,
                      heldout_slabs=dataset.heldout_in_slabs)  # fmt: skip
    config = EvalConfig(synthetic_count=500, metrics=HEADLINE)

    def evaluate_staged(staged: Path) -> dict[str, Any]:
        return evaluate(staged, staged, real, config, samples_dir=workdir / "samples")

    version, _ = publish(store, result, spec, dataset, f"bench-{recipe}", workdir, evaluate=evaluate_staged)
    model_dir = store.model_dir(version)
    for name in ("samples.png", "report.json"):
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, out / name)
    report = json.loads((model_dir / "report.json").read_text())
    snap = result.snapshot
    return {
        "recipe": recipe,
        "minutes": round(minutes, 2),
        "kimg": round(result.step * spec.batch_size / 1000, 1),
        "size": spec.image_size,
        "metrics": report["metrics"],
        "snapshot": {k: snap[k] for k in ("step", "score", "c2st_auc", "diversity_ratio")} if snap else None,
        "steps": result.step,
        "classes": report.get("classes"),
        "utility": report.get("utility"),
    }


def _cell(metrics: dict[str, Any], name: str) -> tuple[str, str]:
    m = metrics.get(name) or {}
    if not m.get("computed", True):
        return "-", "-"
    if name == "c2st_auc" or name == "intensity_w1":
        return f"{m['synthetic_vs_real']:.3f}", f"{m['real_vs_real']:.3f}"
    if name == "diversity_msssim":
        return f"{m['synthetic']:.3f}", f"{m['real']:.3f}"
    return f"{m['likely_copies_fraction']:.3f}", f"{m.get('reference_fraction', 0.01):.3f}"


def comparison_sheet(store: Any, dataset_id: str, folder: Path, recipes: list[str], height: int = 266) -> Path:
    """``comparison.png``: the real held-out slices (left) beside each recipe's ``samples.png``, titled, all
    ``height`` px high (the README's pictures)."""
    from PIL import Image, ImageDraw

    from models.platform.grids import grid

    heldout, _ = store.load_dataset(dataset_id, split="heldout")
    panels = [("real (held out)", grid(heldout[:36]))]
    panels += [
        (f"{r} recipe", Image.open(folder / r / "samples.png"))
        for r in recipes
        if (folder / r / "samples.png").is_file()
    ]
    title, gap = 22, 12
    scaled = [(t, im.convert("L").resize((round(im.width * height / im.height), height))) for t, im in panels]
    sheet = Image.new("L", (sum(im.width for _, im in scaled) + gap * (len(scaled) - 1), height + title), 255)
    draw, x = ImageDraw.Draw(sheet), 0
    for text, im in scaled:
        sheet.paste(im, (x, title))
        draw.text((x + 2, 4), text, fill=0)
        x += im.width + gap
    path = folder / "comparison.png"
    sheet.save(path, optimize=True)
    return path


def print_table(dataset: str, info: Any, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    split = info.split
    title = f"{dataset}: {info.images} slices, classes {info.classes}, held out {split.heldout} (grouped split)"
    table = Table(title=title)
    for col in ("recipe", "px", "kimg", "min", "c2st (ref)", "W1 (ref)", "MS-SSIM syn (real)", "copies (ref)",
                "snapshot"):  # fmt: skip
        table.add_column(col)
    for row in rows:
        cells = [_cell(row["metrics"], name) for name in HEADLINE]
        snap = row["snapshot"]
        table.add_row(row["recipe"], str(row["size"]), str(row["kimg"]), f"{row['minutes']:.1f}",
                      *(f"{v} ({r})" for v, r in cells),
                      f"step {snap['step']}/{row['steps']}" if snap else "last")  # fmt: skip
    Console(width=160).print(table)
    for row in rows:
        print_class_rows(row)


def print_class_rows(row: dict[str, Any]) -> None:
    """A conditional recipe's per-class metrics and its utility test."""
    from rich.console import Console
    from rich.table import Table

    if row.get("classes"):
        table = Table(title=f"{row['recipe']}: per class")
        for col in (
            "class",
            "held-out/syn",
            "c2st (ref)",
            "W1 (ref)",
            "MS-SSIM syn (real)",
            "copies (ref)",
            "collapsed",
        ):
            table.add_column(col)
        for name, section in row["classes"].items():
            counts = f"{section['counts']['heldout']}/{section['counts']['synthetic']}"
            if not section.get("computed"):
                table.add_row(name, counts, *["-"] * 4, section.get("reason", ""))
                continue
            cells = [_cell(section["metrics"], name_) for name_ in HEADLINE]
            table.add_row(name, counts, *(f"{v} ({r})" for v, r in cells), "yes" if section["collapsed"] else "no")
        Console(width=160).print(table)
    utility = row.get("utility") or {}
    if utility and not utility.get("skipped"):
        print_utility(row["recipe"], utility)
    elif utility:
        print(f"{row['recipe']}: utility test not run: {utility.get('why')}")


def print_utility(recipe: str, utility: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{recipe}: utility test ({utility.get('seeds_run')} seeds, held-out real slices)")
    metrics = ("auroc", "balanced_accuracy", "f1_minority")
    table.add_column("arm")
    for m in metrics:
        table.add_column(m)
    for arm, values in utility["arms"].items():
        table.add_row(arm, *(f"{values[m]['mean']:.3f} ± {values[m]['sd']:.3f}" for m in metrics))
    delta = utility["difference"]
    table.add_row("(b) − (a)", *(f"{delta[m]['mean']:+.3f} [{delta[m]['low']:+.3f}, {delta[m]['high']:+.3f}]"
                                 for m in metrics))  # fmt: skip
    Console(width=160).print(table)
    print(utility.get("summary", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="demo,kaggle_like")
    parser.add_argument("--recipes", default="report,old-demo,quick")
    parser.add_argument("--kimg", type=float, default=None, help="images shown per recipe (default: quick's)")
    parser.add_argument("--max-epochs", type=int, default=None, help="epochs at most (default: quick's; 0: no cap)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench-out/quality")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    args = parser.parse_args()

    from models.data.ingest import ingest
    from models.platform.schemas import PRESETS
    from models.platform.settings import Settings
    from models.platform.store import Store

    kimg = args.kimg or float(PRESETS["quick"]["kimg"])
    cap = PRESETS["quick"]["max_epochs"] if args.max_epochs is None else (args.max_epochs or None)
    budget = {"kimg": kimg, "max_epochs": cap}
    out = Path(args.out).resolve()
    summary: dict[str, Any] = {**budget, "datasets": {}}
    for name in args.datasets.split(","):
        home = out / name / "home"
        shutil.rmtree(home, ignore_errors=True)
        settings = Settings(home=home)
        store = Store(home).ensure()
        info = ingest(DATASETS[name], store, settings, name)
        rows = []
        for recipe in args.recipes.split(","):
            print(f"[{name}] training {recipe} ...", file=sys.stderr, flush=True)
            rows.append(train_and_evaluate(store, settings, info, recipe, RECIPES[recipe], budget, args.seed,
                                           out / name / recipe, args.threads))  # fmt: skip
            print_table(name, info, rows)
        summary["datasets"][name] = {"info": info.model_dump(include={"images", "classes", "split"}), "rows": rows}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        sheet = comparison_sheet(store, info.id, out / name, args.recipes.split(","))
        print(f"[{name}] real held-out slices beside every recipe's samples: {sheet}", file=sys.stderr)
    print(f"grids and reports under {out}/<dataset>/<recipe>/ (samples.png, report.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
