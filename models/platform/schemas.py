"""Contracts shared by the API and the worker: the training spec, job progress, manifests.

Torch-free: the API imports this module.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

Architecture = Literal["dcgan-seed", "dcgan", "fastgan"]
JobStatus = Literal["queued", "started", "finished", "failed", "canceled"]
PresetName = Literal["auto", "quick", "standard", "report"]
LossName = Literal["bce", "hinge", "wgan-gp"]
DNorm = Literal["batch", "spectral", "none"]

# Image sizes each architecture can produce.
SUPPORTED_SIZES: dict[str, tuple[int, ...]] = {
    "dcgan-seed": (128,),  # the report's network is fixed at 128 x 128
    "dcgan": (32, 64, 128, 256),
    "fastgan": (64, 128, 256),
}
AUGMENT_OPS = ("color", "translation", "cutout")  # DiffAugment's transforms (models.gan.augment)

# Recipes chosen by measurement (benchmarks/quality.py; docs/training.md says how). A preset fills the fields a
# spec does not give; "auto" is "standard" on a worker with a GPU and "quick" otherwise.
# The best recipe benchmarks/quality.py found for at most 5 minutes on two CPU cores with 50-300 images.
QUICK: dict[str, Any] = {
    "architecture": "fastgan",
    "image_size": 64,
    "width": 32,
    "batch_size": 16,
    # 25 kimg: 2.5 min of training at 64 px on two AMX cores, 3.8 on two AVX-512 BF16 EPYC cores; on a varied
    # set (kaggle_like) 10 kimg drew blobs, 25 heads with a skull. At most 250 epochs: a small set (the demo's ~35
    # training slices of one volume) is shown no more often than at 8-10 kimg, where 30 kimg made G copy it
    # (memorization 0.86 against a reference of 0.11). benchmarks/quality.py, docs/training.md.
    "kimg": 25.0,
    "max_epochs": 250,
    "loss": "hinge",
    "d_norm": "spectral",
    "lr_g": 2e-4,
    "lr_d": 2e-4,
    "beta1": 0.5,
    "beta2": 0.999,
    "ema": True,
    # No DiffAugment, and mode seeking 0.3 against the collapse that brings: over two seeds on both benchmark sets
    # c2st 0.54-0.61 against 0.59-0.75 with ADA, MS-SSIM 2-9 % from the real slices' against 6-34 %, memorization
    # at its reference but once (demo 0.13 against 0.11). The policy below is what `augment: true` uses.
    "augment": False,
    "mode_seeking": 0.3,
    "augment_policy": "color,translation",  # cutout leaked into the samples (benchmarks/quality.py)
    "ada_target": 0.6,
    "snapshots": 6,
}
PRESETS: dict[str, dict[str, Any]] = {
    "quick": QUICK,
    # For about an hour on one GPU at 128 px: quick's recipe scaled up (unmeasured until a GPU run: docs/training.md).
    "standard": {
        **QUICK,
        "image_size": 128,
        "width": 64,
        "batch_size": 32,
        "kimg": 2000.0,
        "max_epochs": None,
        "augment": True,  # standard keeps quick's earlier recipe (ADA, no mode seeking) until a GPU run measures it
        "mode_seeking": 0.0,
        "snapshots": 10,
    },
    # The seed report's recipe, as it is: its Keras DCGAN at 128 px, BCE, Adam 2e-4, 10 epochs, no tricks.
    "report": {
        "architecture": "dcgan-seed",
        "image_size": 128,
        "epochs": 10,
        "batch_size": 16,
        "loss": "bce",
        "d_norm": "batch",
        "lr_g": 2e-4,
        "lr_d": 2e-4,
        "beta1": 0.5,
        "beta2": 0.999,
        "ema": False,
        "augment": False,
        "ada_target": None,
        "snapshots": 0,
    },
}
# WGAN-GP as Gulrajani et al. 2017 train it: 5 critic steps per generator step, Adam 1e-4 with betas (0, 0.9), no
# BatchNorm in the critic (the penalty is per sample). Applied over a preset, under the fields a spec gives.
# A conditional model's defaults, under the fields a spec gives. Without mode seeking every class of the
# labelled demo collapsed to one image (per-class MS-SSIM 0.99 against 0.53 and 0.62 for the real slices); with
# weight 1 they were more varied than the real ones (0.45, 0.44) but brighter and blurrier (W1 0.071 against
# 0.013); 0.3 kept them varied (0.63, 0.56) and closer to the real slices (c2st 0.63, W1 0.035):
# benchmarks/quality.py, docs/training.md.
CONDITIONAL_DEFAULTS: dict[str, Any] = {"mode_seeking": 0.3, "augment": True}  # augment: as measured for it
LOSS_DEFAULTS: dict[str, dict[str, Any]] = {
    "wgan-gp": {"n_critic": 5, "lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.0, "beta2": 0.9, "d_norm": "none"},
}


def _fill_from_preset(data: dict[str, Any], gpu: bool, revalidate: bool) -> dict[str, Any]:
    """``data`` with the fields it does not give taken from its preset (and, for WGAN-GP, the loss's defaults).

    ``given`` records the fields the client gave, so that validating the result again (the worker does, knowing
    whether it has a GPU, with ``revalidate``) fills the others anew: ``preset: "auto"`` becomes "standard" there.
    A client's own ``given`` or ``preset_used`` is ignored: every field a client sends is given.
    """
    recorded = data.get("given") if revalidate else None
    if isinstance(recorded, list) and all(isinstance(k, str) for k in recorded):  # validated before
        keep = set(recorded) | {"dataset"}  # only what the client gave counts as given; extra fields are kept
        given = {k: v for k, v in data.items() if k in keep or k not in TrainSpec.model_fields}
    else:
        given = {k: v for k, v in data.items() if k not in ("given", "preset_used")}
    name = given.get("preset", "auto")
    if not isinstance(name, str) or (name not in PRESETS and name != "auto"):
        return data  # the field's own validation names the choices
    used = ("standard" if gpu else "quick") if name == "auto" else name
    values = dict(PRESETS[used])
    if "epochs" in given and "kimg" not in given:
        values.pop("kimg", None)  # an explicit number of epochs is the length of the run
    if "kimg" in given and "max_epochs" not in given:
        values.pop("max_epochs", None)  # so is an explicit kimg: the preset's cap does not shorten it
    loss = given.get("loss", values.get("loss", "bce"))
    values.update(LOSS_DEFAULTS.get(loss, {}) if isinstance(loss, str) else {})
    if given.get("conditional") is True:
        values.update(CONDITIONAL_DEFAULTS)
    added = {k: v for k, v in values.items() if k not in given}
    return {**given, **added, "given": sorted(given), "preset_used": used}


class TrainSpec(BaseModel):
    """A training job, as posted to ``POST /jobs/train`` and run by the worker.

    A ``preset`` fills every field the spec does not give (``PRESETS``); fields given explicitly override it.
    """

    # Extra fields are kept (forward compatibility), never renamed ones.
    model_config = ConfigDict(extra="allow")

    dataset: str = Field(min_length=1, max_length=64)
    preset: PresetName = "auto"  # auto: "standard" on a GPU worker, "quick" otherwise
    preset_used: str | None = None  # the preset that filled the fields not given (set by validation)
    given: list[str] = Field(default_factory=list)  # the fields the client gave (set by validation)
    architecture: Architecture = "dcgan"
    image_size: int = 64
    epochs: int = Field(default=10, ge=1, le=100_000)  # the report trained 10 epochs
    # Length of the run in thousands of real images shown to D (StyleGAN's unit); overrides epochs when set.
    kimg: float | None = Field(default=None, gt=0, le=100_000)
    # With kimg: the run ends after at most this many epochs (passes over the training split), so that a small
    # set is not shown so often that G learns to copy it; None: kimg alone sets the length.
    max_epochs: int | None = Field(default=None, ge=1, le=100_000)
    batch_size: int = Field(default=16, ge=1, le=4096)
    lr_g: float = Field(default=2e-4, gt=0, le=1.0)  # Adam at 2e-4, as in the report and Radford et al.
    lr_d: float = Field(default=2e-4, gt=0, le=1.0)
    beta1: float = Field(default=0.5, ge=0.0, lt=1.0)  # Radford et al.'s Adam momentum
    beta2: float = Field(default=0.999, ge=0.0, lt=1.0)
    latent_dim: int = Field(default=100, ge=1, le=4096)
    # Base channel width of "dcgan" and "fastgan" (G and D); 64 is DCGAN's, 8-32 trains on a CPU in minutes.
    width: int = Field(default=64, ge=4, le=1024)
    # One model for every class of the dataset (models.gan.conditional); /generate then takes label= or labels=.
    conditional: bool = False
    # Transitional conditioning (Shahbazi et al. 2022): the class information is off for the first cond_start of
    # the run and ramps in linearly until cond_end (fractions of the run); at most 0.5, so that every scored
    # snapshot (second half) and the published generator are fully conditional.
    cond_start: float = Field(default=0.1, ge=0.0, lt=0.5)
    cond_end: float = Field(default=0.4, gt=0.0, le=0.5)
    # Mode seeking (Mao et al. 2019): this weight times 1 / (image distance / latent distance) of same-class
    # fakes is added to G's loss, against per-class collapse; 0: off.
    mode_seeking: float = Field(default=0.0, ge=0.0, le=100.0)
    # The GAN loss (models.gan.losses): the report's "bce", "hinge" (SN-GAN), or "wgan-gp" (gradient penalty 10).
    loss: LossName = "bce"
    n_critic: int = Field(default=1, ge=1, le=10)  # D (critic) steps per G step; WGAN-GP's default is 5
    r1_gamma: float = Field(default=0.0, ge=0.0, le=1000.0)  # R1 penalty on reals (Mescheder et al. 2018); 0: off
    # D's normalisation: "batch" (DCGAN's BatchNorm), "spectral" (Miyato et al. 2018), "none" (WGAN-GP critics).
    # dcgan-seed keeps the report's discriminator (no normalisation) whatever this says.
    d_norm: DNorm = "batch"
    ema: bool = False  # export an exponential moving average of G's weights instead of the raw G
    ema_beta: float = Field(default=0.999, ge=0.5, lt=1.0)  # EMA decay per step (ramped up over the first steps)
    # Small-data augmentation: random flips of the reals, and DiffAugment of every D input (augment_policy).
    augment: bool = False
    augment_policy: str = ",".join(AUGMENT_OPS)  # DiffAugment's transforms, comma-separated
    # ADA's target for r_t = E[sign(D(real))] (Karras et al. 2020): the augmentation probability rises while D
    # overfits (r_t above it) and falls otherwise. None: every D input is augmented (p = 1, DiffAugment's paper).
    ada_target: float | None = Field(default=0.6, gt=0.0, lt=1.0)
    # Snapshots of G scored during training (a small classifier test and the diversity check against the
    # training slices); the best is published. 0: publish the last.
    snapshots: int = Field(default=0, ge=0, le=50)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    # Mixed precision (models.gan.precision): "auto" is bf16 on a CPU with native bf16 (AVX-512 BF16, AMX) and on
    # GPUs that have it, fp16 with a gradient scaler on other GPUs, fp32 elsewhere. Measured on a 2-core AVX-512
    # BF16 CPU (benchmarks/train_step.py): 1.2-1.8x the images/s of fp32, quality within noise (quality.py).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # channels_last memory format for G, D and the images; None: on CUDA only (on the CPU it sped dcgan up by
    # about 7 % and slowed fastgan by 20 %, benchmarks/train_step.py).
    channels_last: bool | None = None
    compile: bool = False  # torch.compile G's and D's forward passes (opt-in: minutes of compilation first)
    activate: bool = False  # activate the new model version even when another one is active
    checkpoint_every: int | None = Field(default=None, ge=1)  # steps; None: the worker's setting

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict):
            context = info.context or {}
            return _fill_from_preset(data, bool(context.get("gpu")), bool(context.get("revalidate")))
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainSpec:
        sizes = SUPPORTED_SIZES[self.architecture]
        if self.image_size not in sizes:
            raise ValueError(
                f"image_size {self.image_size} is not supported by {self.architecture}; use one of {list(sizes)}"
            )
        if self.architecture == "dcgan-seed" and self.latent_dim != 100:
            raise ValueError("dcgan-seed is the report's fixed network: latent_dim must be 100")
        if self.loss == "wgan-gp" and self.d_norm == "batch" and self.architecture != "dcgan-seed":
            raise ValueError("wgan-gp penalises each sample's gradient: its critic cannot use BatchNorm (d_norm)")
        ops = [op.strip() for op in self.augment_policy.split(",") if op.strip()]
        unknown = sorted(set(ops) - set(AUGMENT_OPS))
        if unknown or not ops:
            raise ValueError(f"augment_policy {self.augment_policy!r}: use a comma-separated subset of {AUGMENT_OPS}")
        if self.conditional and self.architecture == "dcgan-seed":
            raise ValueError("dcgan-seed is the report's fixed network and is never conditional: use dcgan or fastgan")
        if self.cond_start >= self.cond_end:
            raise ValueError(f"cond_start ({self.cond_start}) must be below cond_end ({self.cond_end})")
        return self

    def check_dataset(self, dataset: DatasetInfo) -> str | None:
        """Why this spec cannot train on ``dataset`` (a 422's detail), or None when it can."""
        train = dataset.train_images
        if self.batch_size > train:  # training reads the train split only
            held = f", {dataset.images - train} held out" if dataset.split is not None else ""
            return (
                f"batch_size {self.batch_size} is larger than the training split of dataset {dataset.id} "
                f"({train} of {dataset.images} images{held})"
            )
        if not self.conditional:
            return None
        if len(dataset.classes) < 2:
            return f"conditional training needs at least 2 classes; dataset {dataset.id} has {sorted(dataset.classes)}"
        counts = class_train_counts(dataset)
        need = math.ceil(self.batch_size / len(counts))  # a class's share of a balanced batch
        short = {c: n for c, n in counts.items() if n < need}
        if short:
            return (
                f"conditional training with batch_size {self.batch_size} needs at least {need} training images per "
                f"class; too few in {short} (training counts {counts}): add images, or lower batch_size"
            )
        return None

    @property
    def augment_ops(self) -> tuple[str, ...]:
        return tuple(op.strip() for op in self.augment_policy.split(",") if op.strip())


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
    augment_p: float | None = None  # the adaptive augmentation probability now (ADA); None: not adaptive
    r_t: float | None = None  # ADA's overfitting signal, E[sign(D(real))] over the last interval
    # The best snapshot so far: {"step", "score", "c2st_auc", "diversity_ratio"} (lower score is better).
    snapshot: dict[str, Any] | None = None
    collapsed: bool | None = None  # the samples' diversity is far below the real slices' (mode collapse)
    warning: str | None = None  # a problem worth a look (mode collapse), in words


class SplitInfo(BaseModel):
    """The held-out split of a dataset (``split.npy`` in its folder): training never reads held-out rows."""

    train: int
    heldout: int
    fraction: float  # the requested held-out fraction (DRAWAI_HELDOUT_FRACTION)
    seed: int  # DRAWAI_SPLIT_SEED
    classes: dict[str, dict[str, int]] = Field(default_factory=dict)  # class -> {"train": n, "heldout": m}
    # Grouped by source (models.data.split): the volumes, series and files split whole (or in slabs), and the
    # slices dropped next to held-out slabs. None: a dataset stored before the split was grouped.
    groups: int | None = None
    dropped: int | None = None


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

    @property
    def heldout_in_slabs(self) -> bool:
        """Whether held-out slices are slabs of volumes training also saw (the split dropped slices beside them)."""
        return bool(self.split is not None and self.split.dropped)


def class_train_counts(dataset: DatasetInfo) -> dict[str, int]:
    """Training images per class (every image when the dataset was stored before held-out splits existed)."""
    if dataset.split is not None and dataset.split.classes:
        return {c: dataset.split.classes.get(c, {}).get("train", 0) for c in sorted(dataset.classes)}
    return {c: dataset.classes[c] for c in sorted(dataset.classes)}


def class_indices(classes: dict[str, Any]) -> dict[str, int]:
    """A dataset's class ids: the class names in sorted order (``labels.npy`` holds these indices)."""
    return {name: i for i, name in enumerate(sorted(classes))}


class LabelInfo(BaseModel):
    """One class of a conditional model: its name, the ONNX ``label`` index, and its training images."""

    name: str
    index: int
    train_images: int


class ModelIdentity(BaseModel):
    """What names a model version and what it draws: the fields every view of a version shows."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    version: str
    architecture: str
    image_size: int
    latent_dim: int
    conditional: bool
    classes: dict[str, int]  # the dataset's images per class
    labels: list[LabelInfo] | None = None  # a conditional model's classes (None: unconditional)
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
    trained_precision: str = "fp32"  # what it trained in: fp32, or bf16/fp16 autocast (models.gan.precision)
    # The snapshot published and why ({"step", "score", "c2st_auc", "diversity_ratio", "collapsed", "reason",
    # "candidates": every scored snapshot, "ema"}); None: the last step's generator (no snapshots were scored).
    snapshot: dict[str, Any] | None = None
    augment_p: float | None = None  # the adaptive augmentation probability at the end of training
    # The quality report's headline ({"summary", "report": "report.json", "seconds"}), {"error": ...} when the
    # evaluation failed, None for versions published before evaluation existed.
    quality: dict[str, Any] | None = None


# Redis keys and names shared by the API and the worker (neither imports the other).
TRAIN_FUNC = "worker.jobs.train"  # enqueued by dotted path: the API never imports the worker
JOBS_INDEX_KEY = "drawai:jobs"  # sorted set: job id -> enqueue time, for GET /jobs
CANCEL_KEY_FMT = "drawai:cancel:{job_id}"  # set by DELETE /jobs/{id}; the running job's abort_fn reads it
