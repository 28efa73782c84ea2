"""The model both generation and evaluation benchmarks measure: the report's ``dcgan-seed`` network.

128 px, 27M-parameter generator, untrained weights (speed does not depend on them), exported to
ONNX and published as the active version of a store, with a full manifest. Imported by the
scripts beside it (``python benchmarks/<script>.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from models.export import OPSET, check_parity, export_generator, sha256_file
from models.networks import build
from models.publish import library_versions
from models.schemas import ModelManifest, TrainSpec
from models.store import Store, atomic_write_json

SPEC = TrainSpec(dataset="bench", architecture="dcgan-seed", image_size=128)


def publish_bench_model(store: Store) -> tuple[nn.Module, str, Path]:
    """An untrained dcgan-seed generator, exported and published (active) with a full manifest."""
    torch.manual_seed(SPEC.seed)
    G, _ = build(SPEC)
    G.eval()
    with store.staging("bench-model") as staged:
        onnx_path = staged / "generator.onnx"
        export_generator(G, SPEC.latent_dim, onnx_path)
        diff = check_parity(G, SPEC.latent_dim, onnx_path, batch=2)
        manifest = ModelManifest(
            version="pending",
            architecture=SPEC.architecture,
            image_size=SPEC.image_size,
            latent_dim=SPEC.latent_dim,
            conditional=False,
            classes={},
            dataset="bench",
            dataset_sha256="",
            job_id="benchmark (untrained weights)",
            spec=SPEC.model_dump(),
            epochs=0,
            steps=0,
            final_losses={"d_loss": None, "g_loss": None},
            onnx_sha256=sha256_file(onnx_path),
            onnx_parity_max_abs_diff=diff,
            onnx_opset=OPSET,
            onnx_inputs=["z"],
            library_versions=library_versions(),
            created=datetime.now(UTC).isoformat(),
            trained_on="untrained",
        )
        atomic_write_json(staged / "model.json", manifest.model_dump())
        version = store.publish_model(staged)
    store.set_active(version)
    return G, version, store.model_dir(version) / "generator.onnx"
