"""What the sync and async clients share: configuration, errors, retries, requests as data, result parsing.

Each API call is described once as a ``Call`` (method, path, parameters, body, how to read the answer); ``Client``
and ``AsyncClient`` only send it. Answers are parsed into the API's own pydantic models.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Generic, Literal, TypeVar, cast
from urllib.parse import unquote

import httpx
import numpy as np
from pydantic import BaseModel

from service.paging import Page
from service.queue import JobView

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "DRAWAI_API_URL"
KEY_ENV = "DRAWAI_API_KEY"
# Connect and write quickly or fail; an upload's answer may take minutes (the server ingests it first).
TIMEOUT = httpx.Timeout(30.0, read=3600.0)
# A watched job's stream is quiet for up to DRAWAI_SSE_KEEPALIVE_S (15 s) between events.
STREAM_TIMEOUT = httpx.Timeout(30.0, read=120.0)
RETRY_STATUSES = frozenset({429, 503})
PAGE_SIZE = 500

Labels = str | Mapping[str, int] | None  # "yes:48,no:16" or {"yes": 48, "no": 16}
As = Literal["pil", "numpy"]


class DrawAIError(Exception):
    """An HTTP error answer (``status``, the API's ``detail``), or no answer at all (``status`` None)."""

    def __init__(self, status: int | None, detail: Any, response: httpx.Response | None = None) -> None:
        self.status = status
        self.detail = detail
        self.response = response
        text = detail if isinstance(detail, str) else json.dumps(detail)
        super().__init__(f"HTTP {status}: {text}" if status is not None else text)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of answers that say "not now" (429 overload, 503 Redis down or no model yet).

    ``attempts`` counts the first try; the wait is the answer's ``Retry-After`` (seconds or an HTTP date), else
    ``backoff_s * 2**retry``, never over ``max_wait_s``.
    """

    attempts: int = 4
    backoff_s: float = 0.5
    max_wait_s: float = 30.0
    statuses: frozenset[int] = RETRY_STATUSES

    def wait_s(self, response: httpx.Response, retry: int) -> float:
        """How long to wait before retry number ``retry`` (from 0) after ``response``."""
        after = retry_after_s(response.headers.get("retry-after"))
        wait = after if after is not None else self.backoff_s * 2**retry
        return max(0.0, min(wait, self.max_wait_s))

    def should_retry(self, response: httpx.Response, retry: int) -> bool:
        return response.status_code in self.statuses and retry + 1 < self.attempts


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds, or an HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def resolve_url(base_url: str | None) -> str:
    return (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def auth_headers(api_key: str | None) -> dict[str, str]:
    """``Authorization: Bearer`` with ``api_key``, else ``DRAWAI_API_KEY``; nothing when neither is set."""
    key = (api_key if api_key is not None else os.environ.get(KEY_ENV, "")).strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


def error_of(response: httpx.Response) -> DrawAIError:
    """The error an answer of status 400 or more is: the API's ``detail``, else the body's text."""
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text.strip()[:500] or response.reason_phrase
    return DrawAIError(response.status_code, detail, response)


def transport_error(exc: httpx.TransportError, base_url: str) -> DrawAIError:
    if isinstance(exc, httpx.ConnectError):
        return DrawAIError(None, f"cannot connect to the Draw.AI API at {base_url}: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return DrawAIError(None, f"the API at {base_url} did not answer in time ({type(exc).__name__})")
    # The server may stop reading and close the connection when it refuses a body early (over its upload limit).
    return DrawAIError(None, f"the API at {base_url} closed the connection ({exc or type(exc).__name__})")


@dataclass
class Call(Generic[T]):
    """One request, and how to read its (successful) answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    files: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    timeout: httpx.Timeout | None = None
    accept: frozenset[int] = field(default_factory=frozenset)  # error statuses that are answers (GET /readyz: 503)

    def params_without_none(self) -> dict[str, Any] | None:
        return {k: v for k, v in self.params.items() if v is not None} if self.params else None


def model(cls: type[M]) -> Callable[[httpx.Response], M]:
    return lambda r: cls.model_validate(r.json())


def raw(r: httpx.Response) -> bytes:
    return r.content


def none(r: httpx.Response) -> None:
    return None


def page_call(path: str, item: type[M], limit: int, offset: int) -> Call[Page[M]]:
    return Call("GET", path, model(Page[item]), params={"limit": limit, "offset": offset})  # type: ignore[valid-type]


def job_path(job_id: str) -> str:
    return f"/jobs/{quote_segment(job_id)}"


def quote_segment(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


class ProgressFile:
    """A binary file that calls ``progress(bytes_sent, total)`` as httpx reads it to send it (in 64 KiB chunks).

    httpx streams a file object of a multipart form chunk by chunk (its length from ``fileno``), and seeks it to 0
    before it sends (again on a retry): the file is never read whole into memory.
    """

    def __init__(self, f: BinaryIO, total: int, progress: Callable[[int, int], None]) -> None:
        self._f, self._total, self._progress = f, total, progress
        self.name = getattr(f, "name", "upload")

    def read(self, size: int = -1) -> bytes:
        chunk = self._f.read(size)
        self._progress(min(self._f.tell(), self._total), self._total)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        self._f.close()


Progress = Callable[[int, int], None]  # (bytes sent, total bytes)
Source = str | os.PathLike[str] | bytes | IO[bytes]


def upload_file(source: Source, filename: str | None, progress: Progress | None) -> tuple[str, IO[bytes], bool]:
    """The file name, the file object to stream (reporting ``progress``) and whether the caller must close it."""
    if isinstance(source, bytes):
        name, f, own = filename or "upload", cast(IO[bytes], io.BytesIO(source)), True
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.is_dir():
            raise ValueError(f"{path} is a folder: zip it first, or use `drawai datasets add` (zips on the fly)")
        name, f, own = filename or path.name, path.open("rb"), True
    else:
        name, f, own = filename or Path(str(getattr(source, "name", "upload"))).name, source, False
    if progress is None:
        return name, f, own
    return name, cast(IO[bytes], ProgressFile(cast(BinaryIO, f), _length(f), progress)), own


def _length(f: IO[bytes]) -> int:
    """The file's size without reading it (as httpx sizes a multipart part: ``fstat``, else seek and tell)."""
    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError):
        offset = f.tell()
        length = f.seek(0, os.SEEK_END)
        f.seek(offset)
        return length


def labels_param(labels: Labels) -> str | None:
    if labels is None or isinstance(labels, str):
        return labels
    return ",".join(f"{name}:{n}" for name, n in labels.items())


def classes_of(header: str | None) -> list[str] | None:
    """``X-DrawAI-Classes`` (``yes:48,no:16``, names percent-encoded) as one class name per image."""
    if not header:
        return None
    out: list[str] = []
    for item in header.split(","):
        name, _, n = item.rpartition(":")
        out.extend([unquote(name)] * int(n))
    return out


@dataclass
class Generated:
    """``generate``'s answer: the images (PIL images, or a float32 ``[N, 1, H, W]`` array in ``[-1, 1]``), each
    image's seed and class (None for an unconditional model), and what drew them. With ``as_="pil"``, ``pngs``
    holds the server's PNG files (with their provenance text chunks) and ``files`` their names."""

    images: Any
    seeds: list[int]
    labels: list[str] | None
    model_version: str
    engine: str | None = None
    precision: str | None = None
    pngs: list[bytes] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seeds)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.images)


def generate_call(
    count: int | None, seed: int | None, label: str | None, labels: Labels, model_: str | None, as_: As
) -> Call[Generated]:
    if as_ not in ("pil", "numpy"):
        raise ValueError(f"as_ must be 'pil' or 'numpy', not {as_!r}")
    params = {
        "count": count,
        "seed": seed,
        "label": label,
        "labels": labels_param(labels),
        "model": model_,
        "format": "json" if as_ == "pil" else "npy",
    }
    return Call("POST", "/generate", _from_json if as_ == "pil" else _from_npy, params=params)


def _from_json(r: httpx.Response) -> Generated:
    from PIL import Image

    body = r.json()
    entries = body["images"]
    pngs = [base64.b64decode(e["png_base64"]) for e in entries]
    images = [Image.open(io.BytesIO(b)) for b in pngs]
    for image in images:
        image.load()
    labels = [e["class"] for e in entries] if entries and "class" in entries[0] else None
    return Generated(
        images,
        [int(e["seed"]) for e in entries],
        labels,
        body["model_version"],
        body.get("engine"),
        body.get("precision"),
        pngs,
        [e["file"] for e in entries],
    )


def _from_npy(r: httpx.Response) -> Generated:
    array = np.load(io.BytesIO(r.content), allow_pickle=False)
    first = int(r.headers["x-drawai-seed"])
    seeds = list(range(first, first + len(array)))
    return Generated(
        array,
        seeds,
        classes_of(r.headers.get("x-drawai-classes")),
        r.headers["x-drawai-model-version"],
        r.headers.get("x-drawai-engine"),
        r.headers.get("x-drawai-precision"),
    )


def train_body(dataset: str, preset: str | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    body = {"dataset": dataset, **fields}
    if preset is not None:
        body["preset"] = preset
    return body


@dataclass
class JobEvent:
    """One event of ``GET /jobs/{id}/events``: ``event`` is ``progress``, ``phase`` or ``end`` (the last one), ``id``
    its number in its stream (from 1; a reconnected watch starts a new stream), ``job`` the job's view then."""

    event: str
    id: int
    job: JobView

    @property
    def progress(self) -> dict[str, Any]:
        return self.job.progress or {}


class StreamBroken(Exception):
    """The event stream ended without ``end`` (an ``error`` event, or the connection dropped): reconnect."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Reconnects:
    """A watch's bookkeeping across broken streams: a reopened stream starts with the job's current state, which
    is not passed on again when the watcher has seen it; the count of breaks in a row (reset when the job moves on)
    is bounded by the retry policy."""

    def __init__(self, policy: RetryPolicy, base_url: str) -> None:
        self.policy, self.base_url = policy, base_url
        self.breaks = 0
        self.last: JobView | None = None

    def fresh(self, event: JobEvent) -> bool:
        """Whether to pass ``event`` on (not the repeat of a known state that opens a reopened stream)."""
        if event.event == "progress" and event.job == self.last:
            return False
        if event.job != self.last:
            self.breaks = 0
        self.last = event.job
        return True

    def broke(self, exc: StreamBroken | httpx.TransportError) -> float:
        """The wait before reopening the stream; ``DrawAIError`` once the policy's attempts are spent."""
        self.breaks += 1
        if self.breaks >= self.policy.attempts:
            if isinstance(exc, StreamBroken):
                raise DrawAIError(503, exc.detail) from None
            raise transport_error(exc, self.base_url) from None
        return min(self.policy.backoff_s * 2 ** (self.breaks - 1), self.policy.max_wait_s)


def job_event(event: str, data: str, event_id: str | None) -> JobEvent:
    """A parsed event; ``StreamBroken`` for an ``error`` event (Redis failed while the server watched the job)."""
    if event == "error":
        body = json.loads(data)
        raise StreamBroken(str(body.get("detail", body)) if isinstance(body, dict) else str(body))
    return JobEvent(event, int(event_id or 0), JobView.model_validate_json(data))
