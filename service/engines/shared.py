"""One calibration per model version, machine and settings, shared by every API process of one store.

``drawai api`` runs ``DRAWAI_API_WORKERS`` uvicorn processes (two in Compose), and each loads the active model
itself. Calibrated apart, two processes may choose different engines or precisions (candidates' timings are close,
and noisy on a busy machine), and then the same seed gives different bytes depending on which process answers:
byte-identical answers are promised for the same engine and precision only. So the first process to load a version
calibrates under a file lock and records its choice in ``DRAWAI_HOME/serving/``; the others, and later starts on
the same machine, open the recorded setting without timing anything. The record's name carries a digest of all the
choice depends on: the ONNX file, the engines' versions, the CPU (model name and flags), the cores per process, the
ONNX Runtime providers and ``DRAWAI_ENGINE`` / ``DRAWAI_PRECISION`` / ``DRAWAI_INFER_STREAMS``, so another machine
sharing the store, an upgraded engine, or other settings, calibrate for themselves. Delete the folder to calibrate
again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import platform
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from models.platform.cpu import cpu_info
from models.platform.store import atomic_write_json
from service.engines import Engine, Setting, open_engine
from service.engines.calibration import Preferences, Serving

log = logging.getLogger(__name__)
SHARED = "recorded by the first API process to load it; shared by all"
ENGINE_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "openvino")


def engine_versions() -> dict[str, str]:
    """The installed engines' versions: an upgrade may change what a setting computes, so it calibrates anew."""
    versions = {}
    for package in ENGINE_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def record_key(onnx_sha256: str, prefs: Preferences) -> str:
    """A digest of everything a calibration's choice depends on."""
    name, flags = cpu_info()
    parts = {
        "onnx": onnx_sha256,
        "engines": engine_versions(),
        "cpu": [platform.machine(), name, sorted(flags)],
        "cores": prefs.machine_cores(),
        "providers": list(prefs.providers),
        "asked": [prefs.engine, prefs.precision, prefs.streams],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def shared_calibration(
    folder: Path,
    version: str,
    onnx: Path,
    onnx_sha256: str,
    prefs: Preferences,
    calibrate: Callable[[], tuple[Engine, Serving]],
) -> tuple[Engine, Serving]:
    """The recorded setting of ``version`` for this machine and ``prefs``, opened; or ``calibrate()``'s choice,
    recorded. A store that cannot be written falls back to calibrating in this process alone."""
    name = f"{version}-{record_key(onnx_sha256, prefs)}"
    record = folder / f"{name}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = (folder / f"{name}.lock").open("a")
    except OSError as exc:
        log.warning("cannot share calibrations in %s (%s): this process calibrates alone", folder, exc)
        return calibrate()
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        recorded = _opened(record, onnx, prefs)
        if recorded is not None:
            return recorded
        engine, serving = calibrate()
        try:
            atomic_write_json(record, serving.model_dump())
        except OSError as exc:
            log.warning("cannot record the calibration of %s in %s: %s", version, record, exc)
        return engine, serving


def _opened(record: Path, onnx: Path, prefs: Preferences) -> tuple[Engine, Serving] | None:
    """The engine of a recorded calibration, or None when there is none or it no longer opens."""
    try:
        serving = Serving.model_validate_json(record.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable calibration record %s: %s", record, exc)
        return None
    setting = Setting(serving.engine, serving.precision, serving.streams)
    try:
        engine = open_engine(onnx, setting, list(prefs.providers), prefs.machine_cores())
    except Exception as exc:  # an engine's own exception types: an upgraded package, a removed provider
        log.warning("the recorded setting %s no longer opens (%s): calibrating again", setting, exc)
        return None
    reason = serving.reason if SHARED in serving.reason else f"{serving.reason} ({SHARED}: {record.name})"
    return engine, serving.model_copy(update={"device": engine.device, "reason": reason})
