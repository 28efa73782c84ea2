"""The one place that reads the environment: every ``DRAWAI_*`` setting, with its default."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings shared by the API, the worker and the CLI (env prefix ``DRAWAI_``)."""

    model_config = SettingsConfigDict(env_prefix="DRAWAI_", env_file=".env", extra="ignore")

    # Root of the store: datasets, job checkpoints, model versions, the embedded Redis.
    home: Path = Path("drawai-home")
    # None: try redis://127.0.0.1:6379/0, and start an embedded Redis under home/ if nothing answers.
    redis_url: str | None = None
    queue_name: str = "train"

    # Upload limits (zip bombs, pixel bombs, oversized bodies).
    max_upload_bytes: int = 512 * 1024 * 1024
    max_archive_members: int = 20_000
    # Unpacked bytes of one upload: archive members decompressed, volumes gunzipped, DICOM frames decoded.
    max_unpacked_bytes: int = 2 * 1024 * 1024 * 1024
    # DICOM frames of one upload, checked from the headers before decoding. As many as archive members,
    # so a series of single-frame files is never refused for its frames; each frame keeps a 16 KiB
    # sample in memory until the upload is stored (20,000 frames: 320 MiB at most).
    max_dicom_frames: int = Field(default=20_000, ge=1)
    max_image_pixels: int = 64 * 1024 * 1024  # 8192 x 8192: larger than any MRI slice
    min_image_side: int = 32  # smaller images are skipped as "too small"
    # Images are stored padded to square and resized to this side, the largest trainable size.
    storage_size: int = 256
    # Every dataset keeps this fraction of each class as a held-out split that training never reads
    # (at least one image per class stays in training); the split is drawn with this seed.
    heldout_fraction: float = Field(default=0.15, ge=0.0, lt=1.0)
    split_seed: int = Field(default=0, ge=0)

    # Volumes and scans. NIfTI volumes are reoriented to RAS and cut along this plane: axial,
    # coronal or sagittal; 4-D volumes give this frame (0: the first).
    nifti_plane: Literal["axial", "coronal", "sagittal"] = "axial"
    nifti_frame: int = Field(default=0, ge=0)
    # A slice is kept when the body (voxels above 5% of the scaled range) fills this fraction of it.
    nifti_min_body_fraction: float = Field(default=0.15, ge=0.0, le=1.0)
    # Intensity percentiles mapped to black and white, per NIfTI volume and per DICOM series
    # without a window (robust to a few very bright or dark voxels).
    intensity_low_pct: float = Field(default=0.5, ge=0.0, lt=100.0)
    intensity_high_pct: float = Field(default=99.5, gt=0.0, le=100.0)
    # Folder that POST /datasets/import may read datasets from (a folder, archive or volume under
    # it); None: server-side import is disabled (the route refuses).
    import_dir: Path | None = None

    # Jobs.
    job_timeout_s: int = 7 * 24 * 3600  # training can take days on a large dataset
    job_retries: int = 2  # how often a job whose worker died is retried (resumes from its checkpoint)
    result_ttl_s: int = 30 * 24 * 3600  # how long finished/failed jobs stay listed
    # A running job's heartbeat is renewed every monitoring interval; the job counts as abandoned
    # (and is retried) when no heartbeat came for interval + grace seconds.
    job_monitoring_interval_s: int = 10
    job_heartbeat_grace_s: int = 60
    # How often an idle or busy worker looks for abandoned jobs (RQ's default is 10 minutes).
    worker_maintenance_interval_s: int = 60
    checkpoint_every_steps: int = Field(default=200, ge=1)
    # A worker waits this long for an unreachable Redis (a restart, a failover) before it exits; its job
    # trains on meanwhile. Five minutes covers a restart with a large append-only file to load.
    redis_outage_grace_s: float = Field(default=300.0, gt=0)

    # Training device: "auto" picks CUDA when present, else CPU.
    device: str = "auto"

    # Evaluation of every new model version (the quality report). Synthetic images drawn for it:
    # 500 is what the speed target is set for (with 200 real images at 128 px, under 3 minutes on 2 CPU cores).
    eval_synthetic_count: int = Field(default=500, ge=2, le=100_000)
    # The utility test of a conditional model on labelled data: no new classifier seed starts past this many
    # seconds (2 always run); 5 seeds x 3 arms take about a minute on 2 CPU cores at 64 px.
    utility_budget_s: float = Field(default=120.0, ge=0.0, le=86_400.0)
    # TorchScript Inception-v3 (inception-2015-12-05.pt, as StyleGAN2-ADA and clean-fid use) for FID and KID;
    # None: the report says they were not computed and why. Never downloaded.
    fid_weights: Path | None = None

    # Serving.
    max_count: int = Field(default=256, ge=1)  # most images one POST /generate may ask for
    # ONNX Runtime provider: "auto" uses CUDA when it really works, else the CPU; "cpu" forces the CPU.
    onnx_provider: str = "auto"
    # Inference engine, precision and parallel streams of POST /generate. "auto": calibrated when a model loads
    # (a few timed probe batches per candidate; the fastest whose 8-bit output is within one grey level of ONNX
    # Runtime fp32 on 99.9 % of pixels). bf16/fp16 run where the hardware reports them (read at run time).
    engine: Literal["auto", "onnxruntime", "openvino"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    infer_streams: int = Field(default=0, ge=0, le=64)  # batches run at once; 0: what calibration finds best
    # No new calibration candidate starts after this many seconds of a model load (the fp32 reference always runs).
    calibration_budget_s: float = Field(default=2.0, ge=0, le=600)
    # Dynamic batching: a request waits at most this long for others to share its inference call. A batch holds
    # at most batch_max_size / streams rows, so batch_max_size rows keep every inference stream busy.
    batch_max_size: int = Field(default=64, ge=1)
    batch_max_wait_ms: float = Field(default=5.0, ge=0)
    # Backpressure: most latent rows one API process holds admitted (waiting, in the running batch, being
    # encoded) before POST /generate refuses more, with Retry-After. 256 = 4 batches of the default 64: about
    # 4 inference calls of queue, and one request of the default max_count fits. A request larger than the
    # bound is still admitted when nothing else is in flight.
    max_queued_rows: int = Field(default=256, ge=1)
    # How often each API process checks the store's ACTIVE pointer (hot swap across processes).
    model_watch_interval_s: float = Field(default=1.0, gt=0)
    # GET /jobs/{id}/events: a keep-alive comment after this many seconds without an event (proxies cut idle
    # connections), and how often the job's state is read from Redis.
    sse_keepalive_s: float = Field(default=15.0, gt=0, le=3600)
    sse_poll_interval_s: float = Field(default=0.5, gt=0, le=60)

    # Command line: the API that `drawai datasets ...` talks to (its --url overrides this).
    api_url: str = "http://127.0.0.1:8000"
    # ... and the key it sends (Authorization: Bearer); None: the first of api_keys, if any.
    api_key: SecretStr | None = None

    # Access control. Comma-separated keys; when set, every route that changes state (datasets, jobs,
    # activation) needs one (Authorization: Bearer KEY or X-API-Key: KEY), and POST /generate too
    # unless public_generate. SecretStr: never shown in logs or reprs.
    api_keys: SecretStr | None = None
    public_generate: bool = False
    # The API refuses to listen on a non-loopback address without api_keys unless this is true.
    allow_anonymous: bool = False
    # uvicorn worker processes of `drawai api` (the API image's entry point). With more than one, the
    # API's metrics use prometheus_client's multiprocess mode in metrics_dir.
    api_workers: int = Field(default=1, ge=1, le=64)
    # Folder of prometheus_client's multiprocess files (PROMETHEUS_MULTIPROC_DIR); None: home/metrics
    # when api_workers > 1.
    metrics_dir: Path | None = None
    # Port of the worker's own /metrics and /healthz (training progress, job durations, GPU memory); 0: none.
    worker_metrics_port: int = Field(default=9100, ge=0, le=65535)
    # ... and the address it listens on: loopback unless a scraper elsewhere needs it (the image: 0.0.0.0).
    worker_metrics_host: str = "127.0.0.1"

    # The blind reader test (/quiz, /models/{version}/quiz/...) shows readers real held-out slices of a model's
    # dataset beside synthetic ones: a data-access decision, so off unless set (and keyed when keys are set).
    quiz_enabled: bool = False

    @model_validator(mode="after")
    def _check_percentiles(self) -> Settings:
        if self.intensity_low_pct >= self.intensity_high_pct:
            raise ValueError("intensity_low_pct must be below intensity_high_pct")
        return self


def split_keys(value: SecretStr | None) -> list[str]:
    """The keys of a comma-separated ``SecretStr`` (blank entries dropped)."""
    if value is None:
        return []
    return [key.strip() for key in value.get_secret_value().split(",") if key.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
