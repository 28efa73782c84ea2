"""The plots of a quality report, drawn with matplotlib (Agg, no display) into PNG files.

Each function takes plain arrays and a destination path and returns the path it wrote. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SMOOTHING = 50  # steps in the moving average drawn over the raw loss curves
DPI = 100


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never a window, never a display server
    import matplotlib.pyplot as plt

    return plt


def _moving_average(values: np.ndarray, width: int) -> np.ndarray:
    if len(values) < width or width < 2:
        return values
    kernel = np.ones(width) / width
    return np.convolve(values, kernel, mode="valid")


def loss_curves(d_losses: list[float], g_losses: list[float], steps_per_epoch: int | None, path: Path) -> Path:
    """D and G loss per step (faint) with their moving average; epochs on a second axis when known."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=DPI)
    for name, values, colour in (("D loss", d_losses, "tab:blue"), ("G loss", g_losses, "tab:orange")):
        y = np.asarray(values, dtype=np.float64)
        if not len(y):
            continue
        x = np.arange(1, len(y) + 1)
        ax.plot(x, y, color=colour, alpha=0.25, linewidth=0.8)
        width = min(SMOOTHING, max(2, len(y) // 20))
        smooth = _moving_average(y, width)
        ax.plot(x[len(x) - len(smooth) :], smooth, color=colour, linewidth=1.6, label=f"{name} ({width}-step mean)")
    ax.set_xlabel("training step")
    ax.set_ylabel("binary cross-entropy")
    ax.grid(alpha=0.3)
    if d_losses or g_losses:
        ax.legend(loc="upper right")
    if steps_per_epoch:
        top = ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch))
        top.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def intensity_histograms(sets: list[tuple[str, np.ndarray]], path: Path) -> Path:
    """Overlaid pixel-intensity histograms (density, log scale: MRI slices are mostly black background)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=DPI)
    bins = np.arange(0, 257, 4)
    for label, images in sets:
        counts = np.bincount(np.asarray(images).ravel(), minlength=256).astype(np.float64)
        density = counts.reshape(64, 4).sum(axis=1) / max(counts.sum(), 1.0)
        ax.stairs(density, bins, label=f"{label} ({len(images)})", linewidth=1.5)
    ax.set_yscale("log")
    ax.set_xlim(0, 256)
    ax.set_xlabel("pixel intensity (0-255)")
    ax.set_ylabel("share of pixels")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def closest_pairs(
    synthetic: np.ndarray,
    training: np.ndarray,
    pairs: list[dict[str, float | int | bool]],
    path: Path,
) -> Path:
    """Each synthetic image (top, with its seed) above its nearest training image (bottom, with the distance).

    ``pairs`` rows: ``synthetic_index``, ``seed``, ``training_index``, ``distance``, ``likely_copy``.
    Likely copies get red titles.
    """
    plt = _pyplot()
    n = max(len(pairs), 1)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 0.4, 3.8), dpi=DPI, squeeze=False)
    for col in range(n):
        for row in range(2):
            axes[row][col].axis("off")
    for col, pair in enumerate(pairs):
        colour = "red" if pair["likely_copy"] else "black"
        top, bottom = axes[0][col], axes[1][col]
        top.imshow(synthetic[int(pair["synthetic_index"])], cmap="gray", vmin=0, vmax=255)
        top.set_title(f"seed {pair['seed']}", fontsize=8, color=colour)
        bottom.imshow(training[int(pair["training_index"])], cmap="gray", vmin=0, vmax=255)
        bottom.set_title(f"train #{pair['training_index']}\nd={float(pair['distance']):.4f}", fontsize=8, color=colour)
    fig.text(0.005, 0.72, "synthetic", rotation=90, fontsize=9, va="center")
    fig.text(0.005, 0.27, "nearest training", rotation=90, fontsize=9, va="center")
    fig.tight_layout(rect=(0.02, 0, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path
