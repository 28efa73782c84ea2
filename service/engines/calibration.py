"""Choosing how a model is served when it loads: a few timed batches per candidate engine/precision/streams.

``calibrate`` tries every candidate the preferences allow on this machine (``candidates``), times a fixed
probe batch on each (every stream running it at once), and compares each candidate's 8-bit output with
ONNX Runtime fp32 on the CPU, the reference the reports are computed with. It keeps the fastest candidate
whose pixels are within one grey level of the reference on at least ``MIN_WITHIN_ONE`` of the probe's
pixels and whose rows do not depend on the batch they are computed in; when none qualifies, the reference
serves. The whole table (timings, errors, what was refused and
why) is kept with the model and shown in ``/readyz``, ``/models/{version}`` and the metrics.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from models.platform.grids import to_uint8
from models.platform.sampling import CPU, CUDA, latents, onnx_feeds
from service.engines import ENGINES, Engine, EngineError, Setting, open_engine
from service.engines.openvino_engine import openvino_precisions
from service.engines.ort_engine import ort_precisions

log = logging.getLogger(__name__)

PROBE_ROWS = 8  # the probe batch: latents of seeds 0..7, classes in turn
TIMED_ROUNDS = 2  # after one untimed run (which also gives the accuracy); the best round counts
INVARIANCE_ROWS = (1, 3)  # batch sizes whose rows must equal the probe batch's, bit for bit
MIN_WITHIN_ONE = 0.999  # fraction of probe pixels within one grey level of the fp32 reference
REFERENCE = Setting("onnxruntime", "fp32", 1)


class Trial(BaseModel):
    """One candidate of the calibration."""

    engine: str
    precision: str
    streams: int
    images_per_s: float | None = Field(
        default=None, description="probe images per second, every stream running at once"
    )
    max_grey_diff: int | None = Field(default=None, description="largest 8-bit difference from ONNX Runtime fp32")
    within_one_grey: float | None = Field(default=None, description="fraction of probe pixels within one grey level")
    batch_invariant: bool | None = Field(
        default=None, description="each probe row came out bit-identical in batches of 1, 3 and 8 (dynamic batching "
        "must never change a client's bytes)",
    )  # fmt: skip
    accepted: bool = Field(
        description=f"within one grey level on at least {MIN_WITHIN_ONE:.1%} of pixels, and batch-invariant"
    )
    error: str | None = Field(default=None, description="why it could not run, or why it was not tried")


class Serving(BaseModel):
    """How a loaded model version is served in this process, and the calibration that chose it."""

    engine: str
    precision: str
    streams: int
    device: str = Field(description="where it runs: an ONNX Runtime provider, or openvino:CPU")
    reason: str = Field(description="why this setting: calibrated, or set by DRAWAI_ENGINE/PRECISION/STREAMS")
    calibration_s: float
    trials: list[Trial]


@dataclass(frozen=True)
class Preferences:
    """``DRAWAI_ENGINE``, ``DRAWAI_PRECISION``, ``DRAWAI_INFER_STREAMS`` (0: auto) and the machine."""

    engine: str = "auto"
    precision: str = "auto"
    streams: int = 0
    budget_s: float = 2.0  # no new candidate starts after this many seconds (the reference always runs)
    providers: tuple[str, ...] = (CPU,)
    cores: int = 0  # 0: the CPUs this process may run on

    def machine_cores(self) -> int:
        return self.cores or len(os.sched_getaffinity(0))


def stream_counts(prefs: Preferences) -> list[int]:
    if prefs.streams:
        return [prefs.streams]
    cores = prefs.machine_cores()
    return [s for s in (1, 2, 4, 8) if s <= max(1, cores)]


def candidates(prefs: Preferences) -> tuple[list[Setting], list[Trial]]:
    """The settings worth timing here, and the ones asked for that cannot run here (as refused trials)."""
    engines = list(ENGINES) if prefs.engine == "auto" else [prefs.engine]
    supported = {"onnxruntime": ort_precisions(list(prefs.providers)), "openvino": openvino_precisions()}
    out: list[Setting] = []
    refused: list[Trial] = []
    for engine in engines:
        wanted = supported.get(engine, []) if prefs.precision == "auto" else [prefs.precision]
        for precision in wanted:
            if precision not in supported.get(engine, []):
                why = f"{engine} does not run {precision} on this machine"
                refused.append(Trial(engine=engine, precision=precision, streams=0, accepted=False, error=why))
                continue
            out += [Setting(engine, precision, s) for s in stream_counts(prefs)]
    # Likely fastest first, so a budget that runs out cuts the slow tail: the GPU, fewer bits, then OpenVINO (it
    # fuses more of these graphs than ONNX Runtime's CPU kernels), then fewer streams.
    on_gpu = bool(prefs.providers) and prefs.providers[0] == CUDA
    out.sort(key=lambda s: (not (on_gpu and s.engine == "onnxruntime"), s.precision == "fp32", s.engine != "openvino",
                            s.streams))  # fmt: skip
    return out, refused


def probe_feeds(latent_dim: int, classes: int) -> dict[str, np.ndarray]:
    z = latents(latent_dim, list(range(PROBE_ROWS)))
    labels = np.arange(PROBE_ROWS, dtype=np.int64) % classes if classes else None
    return onnx_feeds(z, labels)


def _images_per_s(engine: Engine, feeds: dict[str, np.ndarray], pool: ThreadPoolExecutor) -> float:
    streams = engine.setting.streams
    best = 0.0
    for _ in range(TIMED_ROUNDS):
        t0 = time.perf_counter()
        for f in [pool.submit(engine.run, feeds) for _ in range(streams)]:
            f.result()
        best = max(best, PROBE_ROWS * streams / (time.perf_counter() - t0))
    return best


def _trial(engine: Engine, feeds: dict[str, np.ndarray], reference: np.ndarray,
           pool: ThreadPoolExecutor) -> Trial:  # fmt: skip
    full = engine.run(feeds)
    diff = np.abs(to_uint8(full[:, 0]).astype(np.int16) - reference.astype(np.int16))
    within = float((diff <= 1).mean())
    invariant = _batch_invariant(engine, feeds, full)
    speed = _images_per_s(engine, feeds, pool)
    return Trial(**_fields(engine.setting), images_per_s=speed, max_grey_diff=int(diff.max()), within_one_grey=within,
                 batch_invariant=invariant, accepted=within >= MIN_WITHIN_ONE and invariant)  # fmt: skip


def _batch_invariant(engine: Engine, feeds: dict[str, np.ndarray], full: np.ndarray) -> bool:
    """The first rows of the probe, run as batches of 1 and 3, equal (bit for bit) the same rows in the batch of 8.

    Some kernels pick their blocking by batch size (seen: OpenVINO on a small generator at batch 3), which would make
    an image depend on which other requests shared its batch."""
    for rows in INVARIANCE_ROWS:
        part = engine.run({name: value[:rows] for name, value in feeds.items()})
        if not np.array_equal(part, full[:rows]):
            return False
    return True


def calibrate(path: Path, latent_dim: int, classes: int, prefs: Preferences) -> tuple[Engine, Serving]:
    """Open, check and time each candidate; the fastest accepted one serves. Raises EngineError only when not
    even the ONNX Runtime fp32 reference runs the model."""
    t0 = time.perf_counter()
    cores = prefs.machine_cores()
    feeds = probe_feeds(latent_dim, classes)
    reference_engine = open_engine(path, REFERENCE, [CPU], cores)
    reference = to_uint8(reference_engine.run(feeds)[:, 0])
    settings, trials = candidates(prefs)
    providers = list(prefs.providers)
    best: tuple[float, Engine] | None = None
    with ThreadPoolExecutor(max(stream_counts(prefs)), thread_name_prefix="drawai-calibration") as pool:
        for setting in settings:
            if time.perf_counter() - t0 > prefs.budget_s and best is not None:
                why = f"not tried: past the calibration budget of {prefs.budget_s:g} s"
                trials.append(Trial(**_fields(setting), accepted=False, error=why))
                continue
            try:
                reuse = setting == REFERENCE and providers[0] != CUDA
                engine = reference_engine if reuse else open_engine(path, setting, providers, cores)
                trial = _trial(engine, feeds, reference, pool)
            except Exception as exc:  # an engine's own exception types (compile errors, unsupported ops)
                trials.append(Trial(**_fields(setting), accepted=False, error=f"{type(exc).__name__}: {exc}"))
                continue
            trials.append(trial)
            if trial.accepted and trial.images_per_s and (best is None or trial.images_per_s > best[0]):
                best = (trial.images_per_s, engine)
    if best is None:  # nothing else ran (or was asked for): the reference serves
        log.warning("no candidate engine ran; serving with %s", REFERENCE)
        chosen, reason = reference_engine, "fallback: no candidate ran, ONNX Runtime fp32 on the CPU serves"
    else:
        chosen = best[1]
        forced = [name for name, v in (("ENGINE", prefs.engine), ("PRECISION", prefs.precision)) if v != "auto"]
        forced += ["INFER_STREAMS"] if prefs.streams else []
        reason = "fastest accepted candidate" + (f" (DRAWAI_{', DRAWAI_'.join(forced)} set)" if forced else "")
    s = chosen.setting
    serving = Serving(engine=s.engine, precision=s.precision, streams=s.streams, device=chosen.device,
                      reason=reason, calibration_s=round(time.perf_counter() - t0, 3), trials=trials)  # fmt: skip
    return chosen, serving


def _fields(setting: Setting) -> dict[str, Any]:
    return {"engine": setting.engine, "precision": setting.precision, "streams": setting.streams}


__all__ = ["EngineError", "Preferences", "Serving", "Trial", "calibrate", "candidates"]
