"""Contracts shared by the API and the worker: the training spec, job progress, manifests.

Torch-free: the API imports this module.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Architecture = Literal["dcgan-seed", "dcgan"]
JobStatus = Literal["queued", "started", "finished", "failed", "canceled"]

# Image sizes each architecture can produce.
SUPPORTED_SIZES: dict[str, tuple[int, ...]] = {
    "dcgan-seed": (128,),  # the report's network is fixed at 128 x 128
    "dcgan": (32, 64, 128, 256),
}


class TrainSpec(BaseModel):
    """A training job, as posted to ``POST /jobs/train`` and run by the worker."""

    # Extra fields are kept (forward compatibility), never renamed ones.
    model_config = ConfigDict(extra="allow")

    dataset: str = Field(min_length=1, max_length=64)
    architecture: Architecture = "dcgan"
    image_size: int = 64
    epochs: int = Field(default=10, ge=1, le=100_000)  # the report trained 10 epochs
    batch_size: int = Field(default=16, ge=1, le=4096)
    lr_g: float = Field(default=2e-4, gt=0, le=1.0)  # Adam at 2e-4, as in the report and Radford et al.
    lr_d: float = Field(default=2e-4, gt=0, le=1.0)
    beta1: float = Field(default=0.5, ge=0.0, lt=1.0)  # Radford et al.'s Adam momentum
    latent_dim: int = Field(default=100, ge=1, le=4096)
    # Base channel width of "dcgan" (G and D); 64 is the paper's, 8-16 trains on a CPU in seconds.
    width: int = Field(default=64, ge=4, le=1024)
    conditional: bool = False
    # Small-data augmentation: random flips of the reals, DiffAugment (translation, cutout) of every D input.
    augment: bool = False
    # The GAN loss (models.gan.losses): the report's "bce", "hinge" (SN-GAN), or "wgan-gp" (gradient penalty 10).
    loss: Literal["bce", "hinge", "wgan-gp"] = "bce"
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    activate: bool = False  # activate the new model version even when another one is active
    checkpoint_every: int | None = Field(default=None, ge=1)  # steps; None: the worker's setting

    @model_validator(mode="after")
    def _check(self) -> TrainSpec:
        sizes = SUPPORTED_SIZES[self.architecture]
        if self.image_size not in sizes:
            raise ValueError(
                f"image_size {self.image_size} is not supported by {self.architecture}; use one of {list(sizes)}"
            )
        if self.architecture == "dcgan-seed" and self.latent_dim != 100:
            raise ValueError("dcgan-seed is the report's fixed network: latent_dim must be 100")
        if self.conditional:
            raise ValueError("conditional training is not supported yet; train one model per class")
        return self


class JobProgress(BaseModel):
    """What ``GET /jobs/{id}`` shows while a job trains."""

    phase: str = "queued"  # queued, loading, training, exporting, evaluating, done (or canceled)
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    d_loss: float | None = None
    g_loss: float | None = None
    images_per_s: float | None = None
    eta_s: float | None = None
    resumed_from_step: int | None = None
    detail: str | None = None  # what the phase is doing now (the metric being computed while evaluating)


class SplitInfo(BaseModel):
    """The held-out split of a dataset (``split.npy`` in its folder): training never reads held-out rows."""

    train: int
    heldout: int
    fraction: float  # the requested held-out fraction (DRAWAI_HELDOUT_FRACTION)
    seed: int  # DRAWAI_SPLIT_SEED
    classes: dict[str, dict[str, int]] = Field(default_factory=dict)  # class -> {"train": n, "heldout": m}


class SizeSummary(BaseModel):
    min: int
    median: float
    max: int


class SizeBucket(BaseModel):
    min: int
    max: int | None  # None: open-ended
    count: int


class DatasetStats(BaseModel):
    """Statistics gathered while a dataset's rows were written (original sizes are before padding/resizing)."""

    duplicates: int = 0  # exact duplicates removed (each one is listed in ``skipped``)
    width: SizeSummary | None = None
    height: SizeSummary | None = None
    longer_side: list[SizeBucket] = Field(default_factory=list)  # histogram of the original longer side
    common_sizes: dict[str, int] = Field(default_factory=dict)  # the most common original "WxH" sizes
    intensity_bin_width: int = 8  # gray levels per bin of ``intensity_histogram``
    intensity_histogram: list[int] = Field(default_factory=list)  # stored pixels per bin over 0..255
    intensity_mean: float = 0.0


class DatasetInfo(BaseModel):
    """A stored dataset, as ``POST /datasets`` and ``GET /datasets/{id}`` return it."""

    id: str
    name: str
    images: int
    classes: dict[str, int]
    image_size: int  # side of the stored (square) images
    sha256: str  # hash of the stored pixels and labels
    created: str
    skipped: list[dict[str, str]] = Field(default_factory=list)
    split: SplitInfo | None = None  # None: stored before held-out splits existed; all of it is training data
    stats: DatasetStats | None = None  # None: stored before statistics existed

    @property
    def train_images(self) -> int:
        """How many images training sees: the train split (all images for datasets without a split)."""
        return self.split.train if self.split is not None else self.images


class ModelIdentity(BaseModel):
    """What names a model version and what it draws: the fields every view of a version shows."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    version: str
    architecture: str
    image_size: int
    latent_dim: int
    conditional: bool
    classes: dict[str, int]
    dataset: str
    job_id: str
    created: str


class ModelManifest(ModelIdentity):
    """``model.json`` of a model version."""

    dataset_sha256: str
    spec: dict
    epochs: int
    steps: int
    final_losses: dict[str, float | None]
    onnx_sha256: str
    onnx_parity_max_abs_diff: float
    onnx_opset: int
    onnx_inputs: list[str]
    library_versions: dict[str, str]
    trained_on: str = "cpu"  # the training device type
    # The quality report's headline ({"summary", "report": "report.json", "seconds"}), {"error": ...} when the
    # evaluation failed, None for versions published before evaluation existed.
    quality: dict[str, Any] | None = None


# Redis keys and names shared by the API and the worker (neither imports the other).
TRAIN_FUNC = "worker.jobs.train"  # enqueued by dotted path: the API never imports the worker
JOBS_INDEX_KEY = "drawai:jobs"  # sorted set: job id -> enqueue time, for GET /jobs
CANCEL_KEY_FMT = "drawai:cancel:{job_id}"  # set by DELETE /jobs/{id}; the running job's abort_fn reads it
