"""Inference for the API: loading verified model versions on the engine calibration picks, the active-model holder.

Torch-free. A ``LoadedModel`` is immutable: hot-swapping replaces the holder's reference, so a
request (or batch) that already holds the old model finishes on it, and the next one gets the
new one. Each API process watches ``models/ACTIVE`` in the store, so activating a version through
any process (or any host sharing the store) swaps all of them without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from models.platform.errors import NotFoundError
from models.platform.sampling import CPU, CUDA, choose_providers, onnx_feeds
from models.platform.schemas import ModelManifest
from models.platform.store import Store, sha256_file
from service.engines import Engine
from service.engines.calibration import Preferences, Serving, calibrate
from service.engines.shared import shared_calibration

__all__ = ["CPU", "CUDA", "LoadedModel", "ModelHolder", "ModelLoadError", "Preferences", "choose_providers",
           "load_model"]  # fmt: skip

log = logging.getLogger(__name__)
SERVING_DIR = "serving"  # under DRAWAI_HOME: the calibrations the API processes share (service.engines.shared)


class ModelLoadError(Exception):
    """A model version whose ONNX file is missing, corrupt, or does not match its manifest."""


@dataclass(frozen=True)
class LoadedModel:
    version: str
    manifest: ModelManifest
    engine: Engine
    serving: Serving  # engine, precision, streams, device, and the calibration that chose them

    @property
    def provider(self) -> str:
        """Where it runs: an ONNX Runtime provider, or ``openvino:CPU``."""
        return self.serving.device

    @property
    def streams(self) -> int:
        """How many batches may run at once (each on its own threads or infer request)."""
        return self.serving.streams

    @property
    def latent_dim(self) -> int:
        return self.manifest.latent_dim

    @property
    def image_size(self) -> int:
        return self.manifest.image_size

    def run(self, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """``z [N, latent]`` float32 (and ``labels [N]`` int64 for a conditional model) -> ``image [N, 1, H, W]``
        float32 in ``[-1, 1]``."""
        return self.engine.run(model_feeds(self.manifest, z, labels))


def model_feeds(manifest: ModelManifest, z: np.ndarray, labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The ONNX inputs: ``z``, and ``label`` for a conditional model (class 0 when none are given: a probe)."""
    if manifest.labels and labels is None:
        labels = np.zeros(len(z), np.int64)
    return onnx_feeds(z, labels if manifest.labels else None)


def load_model(store: Store, version: str, prefs: Preferences) -> LoadedModel:
    """Load a version's ONNX file after checking it against the manifest's sha256, on the engine, precision and
    streams that calibration picks for ``prefs``."""
    try:
        manifest = store.get_manifest(version)  # NotFoundError for unknown versions
    except ValueError as exc:  # pydantic's ValidationError: a corrupt or hand-edited model.json
        raise ModelLoadError(f"model {version}: model.json is not a valid manifest: {exc}") from None
    path = store.model_dir(version) / "generator.onnx"
    if not path.is_file():
        raise ModelLoadError(f"model {version} has no generator.onnx")
    digest = sha256_file(path)
    if digest != manifest.onnx_sha256:
        raise ModelLoadError(f"model {version}: generator.onnx sha256 {digest[:12]} does not match its manifest")
    try:
        engine, serving = shared_calibration(
            store.home / SERVING_DIR, version, path, digest, prefs,
            lambda: calibrate(path, manifest.latent_dim, len(manifest.labels or []), prefs),
        )  # fmt: skip
        probe = engine.run(model_feeds(manifest, np.zeros((1, manifest.latent_dim), np.float32)))
    except Exception as exc:  # ORT raises its own exception types for corrupt graphs
        raise ModelLoadError(f"model {version}: ONNX Runtime cannot load generator.onnx: {exc}") from None
    if probe.shape != (1, 1, manifest.image_size, manifest.image_size):
        raise ModelLoadError(f"model {version}: output shape {probe.shape} does not match its manifest")
    log.info("loaded model version=%s engine=%s precision=%s streams=%d device=%s (%s; calibration %.2f s)",
             version, serving.engine, serving.precision, serving.streams, serving.device, serving.reason,
             serving.calibration_s)  # fmt: skip
    for trial in serving.trials:
        log.info("calibration %s: %s", version, trial.model_dump(exclude_none=True))
    return LoadedModel(version, manifest, engine, serving)


class ModelHolder:
    """The active model of this process, plus a small cache of pinned versions."""

    def __init__(self, store: Store, prefs: Preferences, cache_size: int = 3) -> None:
        self.store = store
        self.prefs = prefs
        self.active: LoadedModel | None = None
        self.load_error: str | None = None
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # guards the cache
        # Serializes "which version is active here" decisions: an activation through this process and
        # the watcher following the store must never undo each other.
        self._swap_lock = threading.Lock()
        self._failed: tuple[str, tuple[int, ...]] | None = None  # (version, files' stat) that failed to load

    def _files_stat(self, version: str) -> tuple[int, ...]:
        """Size and mtime of a version's files: a failed load is retried only once they change."""
        out: list[int] = []
        for name in ("model.json", "generator.onnx"):
            try:
                st = (self.store.model_dir(version) / name).stat()
                out += [st.st_size, st.st_mtime_ns]
            except (OSError, NotFoundError):
                out += [-1, -1]
        return tuple(out)

    def load_active(self) -> LoadedModel | None:
        """(Re)load whatever ``models/ACTIVE`` names; keep the current model if that fails."""
        version = self.store.active_version()
        current = self.active
        if version is None or (current is not None and current.version == version):
            return current
        stat = self._files_stat(version)
        if self._failed == (version, stat):  # refused already, unchanged since: don't re-hash every tick
            return current
        try:
            model = self.get(version)
        except (ModelLoadError, NotFoundError) as exc:
            self.load_error = str(exc)
            self._failed = (version, stat)
            log.error("cannot load active model %s: %s", version, exc)
            return self.active
        with self._swap_lock:
            # An activation may have happened while this one loaded: only the store's current choice wins.
            if self.store.active_version() == version:
                self.active, self.load_error, self._failed = model, None, None
        return self.active

    def loaded(self, version: str) -> LoadedModel | None:
        """The version if this process has it loaded (active or cached); never loads."""
        active = self.active
        if active is not None and active.version == version:
            return active
        with self._lock:
            return self._cache.get(version)

    def get(self, version: str) -> LoadedModel:
        """A loaded version (cached); raises NotFoundError or ModelLoadError."""
        if self.active is not None and self.active.version == version:
            return self.active
        with self._lock:
            if version in self._cache:
                self._cache.move_to_end(version)
                return self._cache[version]
        model = load_model(self.store, version, self.prefs)
        with self._lock:
            self._cache[version] = model
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return model

    def activate(self, version: str) -> LoadedModel:
        """Verify and load ``version`` here first; only then make it the store's active version."""
        model = self.get(version)
        with self._swap_lock:
            self.store.set_active(version)
            self.active, self.load_error, self._failed = model, None, None
        log.info("activated model version=%s", version)
        return model

    async def watch(self, interval_s: float) -> None:
        """Follow activations made by other processes (run as a background task)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.load_active)
            except Exception:  # never let the watcher die
                log.exception("model watcher failed")
