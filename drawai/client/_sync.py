"""``Client``: the Draw.AI API from Python, blocking (httpx)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx

from drawai.client import _calls as calls
from drawai.client._base import (
    PAGE_SIZE,
    STREAM_TIMEOUT,
    TIMEOUT,
    Call,
    Progress,
    RetryPolicy,
    Source,
    auth_headers,
    error_of,
    job_path,
    resolve_url,
    transport_error,
    upload_file,
)
from drawai.client._events import (
    JobEvent,
    Reconnects,
    StreamBroken,
    job_event,
)
from drawai.client._generate import (
    As,
    Generated,
    Labels,
    generate_call,
)
from models.platform.schemas import DatasetInfo
from models.report.schema import QualityReport
from service.paging import Page
from service.queue import JobView
from service.routers.health import Health, Readiness
from service.routers.models import Activation, ModelSummary, ModelView

T = TypeVar("T")


class Client:
    """A client of one Draw.AI API.

    ``base_url``: default ``DRAWAI_API_URL``, else ``http://127.0.0.1:8000``; ``api_key``: default ``DRAWAI_API_KEY``
    (sent as ``Authorization: Bearer``). Answers 429 and 503 are retried as ``retry`` says (``Retry-After``
    honoured); any other error raises ``DrawAIError`` with the status and the API's ``detail``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout = TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = resolve_url(base_url)
        self.retry = retry or RetryPolicy()
        self.sleep: Callable[[float], None] = time.sleep
        self._http = httpx.Client(
            base_url=self.base_url, headers=auth_headers(api_key), timeout=timeout, transport=transport
        )
        self.datasets = Datasets(self)
        self.jobs = Jobs(self)
        self.models = Models(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call[T]) -> T:
        """Send ``call``, retrying 429/503 answers; its parsed answer, or ``DrawAIError``."""
        for retry in range(self.retry.attempts):
            try:
                r = self._http.request(
                    call.method,
                    call.path,
                    params=call.params_without_none(),
                    json=call.json,
                    files=call.files,
                    data=call.data,
                    timeout=call.timeout or httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                raise transport_error(exc, self.base_url) from None
            if r.status_code < 400 or r.status_code in call.accept:
                return call.parse(r)
            if not self.retry.should_retry(r, retry):
                raise error_of(r)
            self.sleep(self.retry.wait_s(r, retry))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def pages(self, fetch: Callable[[int, int], Call[Page[Any]]], page_size: int = PAGE_SIZE) -> Iterator[Any]:
        """Every item of a list route, a page at a time."""
        offset = 0
        while True:
            page = self.send(fetch(page_size, offset))
            yield from page.data
            offset += len(page.data)
            if not page.data or offset >= page.count:
                return

    def health(self) -> Health:
        return self.send(calls.health())

    def ready(self) -> Readiness:
        """``GET /readyz``: ``status`` ``ready``, or ``not ready`` with the ``reasons`` (no exception)."""
        return self.send(calls.ready())

    def generate(
        self,
        count: int | None = None,
        seed: int | None = None,
        label: str | None = None,
        labels: Labels = None,
        model: str | None = None,
        as_: As = "pil",
    ) -> Generated:
        """Synthetic slices: PIL images (``as_="pil"``) or a float32 ``[N, 1, H, W]`` array in ``[-1, 1]``
        (``as_="numpy"``), with each image's seed and class. ``labels``: ``"yes:48,no:16"`` or ``{"yes": 48}``."""
        return self.send(generate_call(count, seed, label, labels, model, as_))

    def watch_job(self, job_id: str) -> Iterator[JobEvent]:
        """The job's events (``GET /jobs/{id}/events``) until ``end``. A broken stream (dropped connection, Redis
        failing on the server) is reopened as ``retry`` allows; the state it starts with is not repeated."""
        state = Reconnects(self.retry, self.base_url)
        while True:
            try:
                for event in self._stream(job_id):
                    if state.fresh(event):
                        yield event
                    if event.event == "end":
                        return
                raise StreamBroken("the event stream closed before the job ended")
            except (StreamBroken, httpx.TransportError) as exc:
                self.sleep(state.broke(exc))

    def _stream(self, job_id: str) -> Iterator[JobEvent]:
        from httpx_sse import connect_sse

        for retry in range(self.retry.attempts):
            with connect_sse(self._http, "GET", f"{job_path(job_id)}/events", timeout=STREAM_TIMEOUT) as source:
                r = source.response
                if r.status_code < 400:
                    for sse in source.iter_sse():
                        yield job_event(sse.event, sse.data, sse.id)
                    return
                r.read()
                if not self.retry.should_retry(r, retry):
                    raise error_of(r)
                wait = self.retry.wait_s(r, retry)
            self.sleep(wait)


class Datasets:
    def __init__(self, client: Client) -> None:
        self._c = client

    def upload(
        self, source: Source, name: str | None = None, *, filename: str | None = None, progress: Progress | None = None
    ) -> DatasetInfo:
        """Upload an archive, NIfTI volume, DICOM file or image (a path, bytes or a binary file), streamed from
        disk; ``progress(bytes_sent, total)`` is called as it goes. The server's report of what it stored."""
        fname, f, own = upload_file(source, filename, progress)
        try:
            return self._c.send(calls.upload(fname, f, name))
        finally:
            if own:
                f.close()

    def import_(self, path: str, name: str | None = None) -> DatasetInfo:
        """Store a folder, archive or volume found on the server under its ``DRAWAI_IMPORT_DIR``."""
        return self._c.send(calls.import_dataset(path, name))

    def list(self, limit: int = 100, offset: int = 0) -> Page[DatasetInfo]:
        return self._c.send(calls.list_datasets(limit, offset))

    def iter(self, page_size: int = PAGE_SIZE) -> Iterator[DatasetInfo]:
        return self._c.pages(calls.list_datasets, page_size)

    def get(self, dataset_id: str) -> DatasetInfo:
        return self._c.send(calls.get_dataset(dataset_id))

    def delete(self, dataset_id: str) -> None:
        self._c.send(calls.delete_dataset(dataset_id))

    def preview(self, dataset_id: str, per_class: int = 8) -> bytes:
        """A PNG contact sheet: up to ``per_class`` samples of each class."""
        return self._c.send(calls.preview(dataset_id, per_class))


class Jobs:
    def __init__(self, client: Client) -> None:
        self._c = client

    def train(self, dataset: str, preset: str | None = None, **fields: Any) -> JobView:
        """Enqueue training on ``dataset``: a ``preset`` (quick, standard, report) and/or explicit spec fields."""
        return self._c.send(calls.train(dataset, preset, fields))

    def list(self, limit: int = 100, offset: int = 0) -> Page[JobView]:
        return self._c.send(calls.list_jobs(limit, offset))

    def iter(self, page_size: int = PAGE_SIZE) -> Iterator[JobView]:
        return self._c.pages(calls.list_jobs, page_size)

    def get(self, job_id: str) -> JobView:
        return self._c.send(calls.get_job(job_id))

    def cancel(self, job_id: str) -> JobView:
        return self._c.send(calls.cancel_job(job_id))

    def watch(self, job_id: str) -> Iterator[JobEvent]:
        return self._c.watch_job(job_id)

    def wait(self, job_id: str) -> JobView:
        """Watch the job until it ends; its final view (status finished, failed or canceled)."""
        last = None
        for event in self.watch(job_id):
            last = event
        assert last is not None and last.event == "end"
        return last.job


class Models:
    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self, limit: int = 100, offset: int = 0) -> Page[ModelSummary]:
        return self._c.send(calls.list_models(limit, offset))

    def iter(self, page_size: int = PAGE_SIZE) -> Iterator[ModelSummary]:
        return self._c.pages(calls.list_models, page_size)

    def active(self) -> ModelSummary | None:
        return next((m for m in self.iter() if m.active), None)

    def get(self, version: str) -> ModelView:
        return self._c.send(calls.get_model(version))

    def activate(self, version: str) -> Activation:
        return self._c.send(calls.activate(version))

    def report(self, version: str) -> QualityReport:
        return self._c.send(calls.report(version))

    def report_html(self, version: str) -> str:
        return self._c.send(calls.report_html(version))

    def samples(self, version: str) -> bytes:
        """The version's sample grid (PNG)."""
        return self._c.send(calls.samples(version))
