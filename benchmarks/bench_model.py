"""The models the benchmarks measure: the report's ``dcgan-seed`` network, and the demo's ``dcgan``.

``SPEC``: 128 px, 27M-parameter generator; ``DEMO_SPEC`` (the load and soak benchmarks): the network of
the ``quick`` preset that ``make demo`` trains. Untrained weights (speed does not depend on them),
exported to ONNX and published as the active version of a store, with a full manifest. Imported by
the scripts beside it (``python benchmarks/<script>.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from models.gan.export import OPSET, check_parity, export_generator, sha256_file
from models.gan.networks import build
from models.gan.publish import library_versions
from models.platform.schemas import ModelManifest, TrainSpec
from models.platform.store import Store, atomic_write_json

SPEC = TrainSpec(dataset="bench", preset="report")
# The network `make demo` trains (drawai.demo.DEMO_SPEC: the "quick" preset); the load and soak benchmarks' default.
DEMO_SPEC = TrainSpec(dataset="bench", preset="quick")
SPECS = {"dcgan-seed": SPEC, "demo": DEMO_SPEC}


def publish_bench_model(
    store: Store, spec: TrainSpec = SPEC, G: nn.Module | None = None
) -> tuple[nn.Module, str, Path]:
    """A generator of ``spec`` (default dcgan-seed; untrained unless ``G`` is given), exported and published (active)
    with a manifest."""
    if G is None:
        torch.manual_seed(spec.seed)
        G, _ = build(spec)
    G = G.cpu().eval()
    with store.staging("bench-model") as staged:
        onnx_path = staged / "generator.onnx"
        export_generator(G, spec.latent_dim, onnx_path)
        diff = check_parity(G, spec.latent_dim, onnx_path, batch=2)
        manifest = ModelManifest(
            version="pending",
            architecture=spec.architecture,
            image_size=spec.image_size,
            latent_dim=spec.latent_dim,
            conditional=False,
            classes={},
            dataset="bench",
            dataset_sha256="",
            job_id="benchmark (untrained weights)",
            spec=spec.model_dump(),
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
