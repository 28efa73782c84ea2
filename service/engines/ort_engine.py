"""ONNX Runtime: the CPU provider, or CUDA with IO binding; fp32, or fp16 on CUDA (a converted graph)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.platform.sampling import CPU, CUDA
from service.engines import EngineError, Setting

log = logging.getLogger(__name__)


def ort_precisions(providers: list[str]) -> list[str]:
    """What ONNX Runtime runs here: fp32 everywhere; fp16 on CUDA (its CPU kernels would only cast back)."""
    return ["fp32", "fp16"] if providers and providers[0] == CUDA else ["fp32"]


def session_options(threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = max(1, threads)
    if threads == 1:
        # One thread per stream: no pool to spin up, so no spinning either (it would steal the other streams' cores).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def fp16_graph(path: Path) -> bytes:
    """The graph with float16 weights and activations, float32 at its inputs and output (CUDA's fp16)."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise EngineError(f"fp16 needs the onnx package: {exc}") from None
    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    return bytes(model.SerializeToString())


class OrtEngine:
    """``InferenceSession.run`` is thread-safe: each stream is a concurrent call with its share of the cores."""

    def __init__(self, path: Path, setting: Setting, providers: list[str], cores: int) -> None:
        import onnxruntime as ort

        if setting.precision not in ort_precisions(providers):
            raise EngineError(f"onnxruntime runs {setting.precision} only on CUDA")
        self.setting = setting
        graph: str | bytes = fp16_graph(path) if setting.precision == "fp16" else str(path)
        opts = session_options(cores // setting.streams)
        self.session = ort.InferenceSession(graph, opts, providers=providers or [CPU])
        self.device = str(self.session.get_providers()[0])
        self._cuda = self.device == CUDA

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if not self._cuda:
            return np.asarray(self.session.run(["image"], feeds)[0])
        binding = self.session.io_binding()  # inputs copied once; the output stays on the GPU until fetched
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        binding.bind_output("image", "cuda")
        self.session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)
