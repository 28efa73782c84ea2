"""OpenVINO on the CPU, reading the same ONNX file: fp32, and bf16 or fp16 where the CPU reports them.

Precision support is read at run time from the CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (``BF16`` on CPUs
with AVX-512 BF16 or AMX, ``FP16`` on those with AVX-512 FP16 or AMX-FP16), never from CPU names. A model is
compiled with ``NUM_STREAMS`` = the setting's streams, so OpenVINO splits the cores among them, and each
concurrent ``run`` takes one of as many infer requests.
"""

from __future__ import annotations

import logging
import queue
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from service.engines import EngineError, Setting

log = logging.getLogger(__name__)

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}  # INFERENCE_PRECISION_HINT values
CAPABILITIES = {"bf16": "BF16", "fp16": "FP16"}


@cache
def core() -> Any:
    """One ``openvino.Core`` per process (it holds the plugins); None when OpenVINO is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    return ov.Core()


def openvino_precisions() -> list[str]:
    """The precisions OpenVINO's CPU plugin runs natively here (empty without OpenVINO)."""
    ov_core = core()
    if ov_core is None or "CPU" not in ov_core.available_devices:
        return []
    capabilities = set(ov_core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return ["fp32"] + [p for p, cap in CAPABILITIES.items() if cap in capabilities]


def cpu_name() -> str:
    ov_core = core()
    return str(ov_core.get_property("CPU", "FULL_DEVICE_NAME")) if ov_core is not None else "unknown"


class OpenVinoEngine:
    def __init__(self, path: Path, setting: Setting, cores: int) -> None:
        ov_core = core()
        if ov_core is None:
            raise EngineError("openvino is not installed")
        if setting.precision not in openvino_precisions():
            raise EngineError(f"this CPU does not run {setting.precision} in OpenVINO")
        self.setting = setting
        self.device = "openvino:CPU"
        config = {
            "INFERENCE_PRECISION_HINT": HINTS[setting.precision],
            "NUM_STREAMS": str(setting.streams),
            "INFERENCE_NUM_THREADS": str(max(cores, setting.streams)),
        }
        try:
            compiled = ov_core.compile_model(str(path), "CPU", config)
        except RuntimeError as exc:
            raise EngineError(f"openvino cannot compile the model: {exc}") from None
        self._output = compiled.output("image")
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(setting.streams):
            self._requests.put(compiled.create_infer_request())

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        request = self._requests.get()  # at most `streams` calls run at once; more wait for a free request
        try:
            result = request.infer(feeds)
            return np.array(result[self._output], dtype=np.float32, copy=True)  # the request reuses its buffer
        finally:
            self._requests.put(request)
