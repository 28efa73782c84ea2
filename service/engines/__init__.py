"""Inference engines behind one small interface: ONNX Runtime and OpenVINO, each reading the same ONNX file.

An ``Engine`` runs a generator's ONNX inputs (``models.platform.sampling.onnx_feeds``) and returns the
``image`` output ``[N, 1, H, W]`` float32. ``run`` is thread-safe and meant to be called from up to
``setting.streams`` threads at once (the batcher's parallel inference streams): ONNX Runtime runs concurrent
``InferenceSession.run`` calls, OpenVINO hands each call one of ``streams`` infer requests.

Which engine, precision and number of streams serve a model is chosen when it loads
(``service.engines.calibration``): the fastest candidate whose 8-bit output stays within one grey level of
ONNX Runtime fp32. Torch-free, like the rest of the serving layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

ENGINES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True, order=True)
class Setting:
    """One way to run a model: engine, precision and parallel streams (concurrent runs, each on its own
    threads or infer request)."""

    engine: str  # one of ENGINES
    precision: str  # one of PRECISIONS
    streams: int = 1

    def __str__(self) -> str:
        return f"{self.engine} {self.precision} x{self.streams}"


class EngineError(Exception):
    """An engine cannot load or run a model (missing package, unsupported graph or precision)."""


class Engine(Protocol):
    setting: Setting
    device: str  # where it really runs: an ONNX Runtime provider name, or "openvino:CPU"

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """``image [N, 1, H, W]`` float32 for the ONNX inputs ``feeds``; thread-safe."""
        ...


def open_engine(path: Path, setting: Setting, providers: list[str], cores: int) -> Engine:
    """An engine for ``setting`` on the ONNX file ``path``; ``cores`` are shared among its streams.

    ``providers`` (ONNX Runtime's, e.g. CUDA then CPU) apply to the onnxruntime engine only."""
    if setting.engine == "onnxruntime":
        from service.engines.ort_engine import OrtEngine

        return OrtEngine(path, setting, providers, cores)
    if setting.engine == "openvino":
        from service.engines.openvino_engine import OpenVinoEngine

        return OpenVinoEngine(path, setting, cores)
    raise EngineError(f"unknown engine {setting.engine!r}: one of {', '.join(ENGINES)}")
