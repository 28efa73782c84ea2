"""The artifact store under ``DRAWAI_HOME``: datasets, job work directories, model versions.

Layout::

    datasets/<id>/dataset.json, images.npy (uint8 [N, S, S]), labels.npy (int64 [N]),
                  split.npy (bool [N], True = held out; training rows first)
    jobs/<job id>/checkpoint.pt, samples/epoch_0001.png, history.json
    models/<version>/generator.onnx, model.json, samples.png, history.json (per-step losses),
                     report.json, plots/*.png (the quality report, written before the version appears)
    models/ACTIVE                    the active version's name
    tmp/                             staging area; everything is written here, then renamed
    redis/                           the embedded Redis, when one is used
    serving/<version>-<digest>.json  the API processes' shared calibration of a version (service.engines.shared)

Every write is atomic: files are written under ``tmp/`` (same file system) and renamed into
place, so a reader sees a whole file or none. Torch-free.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.platform.errors import CorruptError, NotFoundError
from models.platform.schemas import DatasetInfo, ModelManifest

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION = re.compile(r"^v(\d+)$")

DatasetSplit = Literal["train", "heldout", "all"]
REPORT_JSON = "report.json"  # a version's quality report (models.quality.evaluation)
REPORT_PLOTS = "plots"  # ... and the folder of its plots, beside it


def check_id(value: str) -> str:
    """Refuse ids that could escape their folder (``..``, slashes, empty)."""
    if not _ID.match(value) or ".." in value:
        raise NotFoundError(value)
    return value


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


class Store:
    def __init__(self, home: Path | str) -> None:
        self.home = Path(home).resolve()

    # -- layout -------------------------------------------------------------------------
    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @property
    def redis_dir(self) -> Path:
        return self.home / "redis"

    def ensure(self) -> Store:
        for d in (self.datasets_dir, self.jobs_dir, self.models_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    @contextmanager
    def staging(self, prefix: str = "stage") -> Iterator[Path]:
        """A fresh folder under ``tmp/``, removed on exit unless it was renamed away."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=self.tmp_dir))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def _remove_tree(self, path: Path) -> None:
        """Make a folder disappear at once (rename into tmp/), then delete it."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        grave = self.tmp_dir / f"deleted-{uuid.uuid4().hex}"
        os.rename(path, grave)
        shutil.rmtree(grave, ignore_errors=True)

    # -- datasets -----------------------------------------------------------------------
    def dataset_dir(self, dataset_id: str) -> Path:
        return self.datasets_dir / check_id(dataset_id)

    def new_dataset_id(self) -> str:
        return f"ds-{uuid.uuid4().hex[:12]}"

    def commit_dataset(self, staged: Path, info: DatasetInfo) -> DatasetInfo:
        """Publish a staged folder holding ``images.npy`` and ``labels.npy`` as dataset ``info.id``."""
        atomic_write_json(staged / "dataset.json", info.model_dump())
        self.datasets_dir.mkdir(parents=True, exist_ok=True)
        os.rename(staged, self.dataset_dir(info.id))
        return info

    def get_dataset(self, dataset_id: str) -> DatasetInfo:
        """The dataset's description; ``CorruptError`` when its ``dataset.json`` or pixel files are damaged."""
        folder = self.dataset_dir(dataset_id)
        try:
            info = DatasetInfo.model_validate_json((folder / "dataset.json").read_bytes())
        except FileNotFoundError:
            raise NotFoundError(dataset_id) from None
        except ValueError as exc:  # pydantic's ValidationError: not JSON, or not a dataset description
            raise CorruptError(f"dataset {dataset_id}: dataset.json is not valid ({type(exc).__name__})") from None
        missing = [name for name in ("images.npy", "labels.npy") if not (folder / name).is_file()]
        if missing:
            raise CorruptError(f"dataset {dataset_id}: {', '.join(missing)} missing")
        return info

    def list_datasets(self) -> list[DatasetInfo]:
        if not self.datasets_dir.is_dir():
            return []
        out = []
        for d in sorted(self.datasets_dir.iterdir()):
            try:
                out.append(self.get_dataset(d.name))
            except NotFoundError:
                continue
            except CorruptError as exc:  # one damaged dataset must not hide the others
                log.warning("skipping dataset %s: %s", d.name, exc)
        return sorted(out, key=lambda i: i.created)

    def load_dataset(self, dataset_id: str, split: DatasetSplit = "train") -> tuple[np.ndarray, np.ndarray]:
        """Images (uint8 ``[N, S, S]``, memory-mapped) and labels (int64 ``[N]``) of one split.

        ``"train"`` (what training reads), ``"heldout"`` or ``"all"``. A dataset stored without
        ``split.npy`` (before held-out splits existed) is all training data.
        """
        if split not in ("train", "heldout", "all"):
            raise ValueError(f"unknown split {split!r}: use train, heldout or all")
        d = self.dataset_dir(dataset_id)
        if not (d / "dataset.json").is_file():
            raise NotFoundError(dataset_id)
        images, labels = np.load(d / "images.npy", mmap_mode="r"), np.load(d / "labels.npy")
        if split == "all":
            return images, labels
        split_path = d / "split.npy"
        heldout = np.load(split_path) if split_path.is_file() else np.zeros(len(labels), dtype=bool)
        if heldout.shape != labels.shape or heldout.dtype != bool:
            raise CorruptError(f"dataset {dataset_id}: split.npy does not match labels.npy")
        rows = np.flatnonzero(heldout if split == "heldout" else ~heldout)
        if len(rows) == 0 or rows[-1] - rows[0] + 1 == len(rows):  # contiguous (as stored): a view, no copy
            start = int(rows[0]) if len(rows) else 0
            return images[start : start + len(rows)], labels[start : start + len(rows)]
        return images[rows], labels[rows]

    def delete_dataset(self, dataset_id: str) -> None:
        d = self.dataset_dir(dataset_id)
        if not d.is_dir():
            raise NotFoundError(dataset_id)
        self._remove_tree(d)

    # -- jobs ---------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / check_id(job_id)

    # -- models -------------------------------------------------------------------------
    def model_dir(self, version: str) -> Path:
        return self.models_dir / check_id(version)

    def publish_model(self, staged: Path) -> str:
        """Rename a staged model folder to the next free ``v<N>``; safe against concurrent workers.

        ``rename`` onto an existing, non-empty folder fails, so two workers never share a version.
        """
        self.models_dir.mkdir(parents=True, exist_ok=True)
        n = max((int(m.group(1)) for p in self.models_dir.iterdir() if (m := _VERSION.match(p.name))), default=0)
        while True:
            n += 1
            version = f"v{n}"
            manifest_path = staged / "model.json"
            manifest = json.loads(manifest_path.read_text())
            manifest["version"] = version
            atomic_write_json(manifest_path, manifest)
            report_path = staged / REPORT_JSON
            if report_path.is_file():  # the quality report names its version too
                report = json.loads(report_path.read_text())
                report.setdefault("model", {})["version"] = version
                atomic_write_json(report_path, report)
            try:
                os.rename(staged, self.models_dir / version)
                return version
            except OSError:
                if (self.models_dir / version).exists():
                    continue
                raise

    def list_models(self) -> list[ModelManifest]:
        if not self.models_dir.is_dir():
            return []
        out = []
        for p in self.models_dir.iterdir():
            if _VERSION.match(p.name) and (p / "model.json").is_file():
                try:
                    out.append(self.get_manifest(p.name))
                except CorruptError as exc:  # one damaged version must not hide the others
                    log.warning("skipping model %s: %s", p.name, exc)
        return sorted(out, key=lambda m: int(m.version[1:]))

    def version_of_job(self, job_id: str) -> ModelManifest | None:
        """The version a training job published, if it did (a job publishes at most one)."""
        return next((m for m in self.list_models() if m.job_id == job_id), None)

    @contextmanager
    def publishing(self, job_id: str) -> Iterator[None]:
        """Held while a job looks for its version and publishes one: two runs of a job never both publish."""
        lock_path = self.job_dir(job_id) / ".publish.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def get_manifest(self, version: str) -> ModelManifest:
        try:
            return ModelManifest.model_validate_json((self.model_dir(version) / "model.json").read_bytes())
        except FileNotFoundError:
            raise NotFoundError(version) from None
        except ValueError as exc:  # pydantic's ValidationError
            raise CorruptError(f"model {version}: model.json is not a valid manifest ({type(exc).__name__})") from None

    def active_version(self) -> str | None:
        try:
            version = (self.models_dir / "ACTIVE").read_text().strip()
        except FileNotFoundError:
            return None
        return version or None

    def set_active(self, version: str) -> None:
        self.get_manifest(version)  # must exist
        atomic_write_bytes(self.models_dir / "ACTIVE", version.encode())
