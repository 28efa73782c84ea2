"""What the sync and async clients share: configuration, errors, retries, requests as data, streamed uploads.

Each API call is described once as a ``Call`` (method, path, parameters, body, how to read the answer); ``Client``
and ``AsyncClient`` only send it. Answers are parsed into the API's own pydantic models (``_generate``: images;
``_events``: a watched job).
"""

from __future__ import annotations

import email.utils
import io
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Generic, TypeVar, cast

import httpx
from pydantic import BaseModel

from service.paging import Page

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


def api_detail(response: httpx.Response) -> Any:
    """An error answer's ``detail`` (the API's JSON shape), else the body's JSON, else its text."""
    try:
        body = response.json()
        return body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase


def error_of(response: httpx.Response) -> DrawAIError:
    """The error an answer of status 400 or more is: the API's ``detail``, else the body's text."""
    return DrawAIError(response.status_code, api_detail(response), response)


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


def train_body(dataset: str, preset: str | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    body = {"dataset": dataset, **fields}
    if preset is not None:
        body["preset"] = preset
    return body
