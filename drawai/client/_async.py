"""``AsyncClient``: the Draw.AI API from asyncio code (notebooks, services); the same calls as ``Client``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
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


class AsyncClient:
    """``Client``'s twin for asyncio: every method is a coroutine, ``watch``/``iter`` are async iterators.

    ``async with AsyncClient() as api: job = await api.jobs.get(job_id)``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout = TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = resolve_url(base_url)
        self.retry = retry or RetryPolicy()
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=auth_headers(api_key), timeout=timeout, transport=transport
        )
        self.datasets = AsyncDatasets(self)
        self.jobs = AsyncJobs(self)
        self.models = AsyncModels(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        """Send ``call``, retrying 429/503 answers; its parsed answer, or ``DrawAIError``."""
        for retry in range(self.retry.attempts):
            try:
                r = await self._http.request(
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
            await self.sleep(self.retry.wait_s(r, retry))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def pages(
        self, fetch: Callable[[int, int], Call[Page[Any]]], page_size: int = PAGE_SIZE
    ) -> AsyncIterator[Any]:
        offset = 0
        while True:
            page = await self.send(fetch(page_size, offset))
            for item in page.data:
                yield item
            offset += len(page.data)
            if not page.data or offset >= page.count:
                return

    async def health(self) -> Health:
        return await self.send(calls.health())

    async def ready(self) -> Readiness:
        return await self.send(calls.ready())

    async def generate(
        self,
        count: int | None = None,
        seed: int | None = None,
        label: str | None = None,
        labels: Labels = None,
        model: str | None = None,
        as_: As = "pil",
    ) -> Generated:
        return await self.send(generate_call(count, seed, label, labels, model, as_))

    async def watch_job(self, job_id: str) -> AsyncIterator[JobEvent]:
        """The job's events until ``end``; a broken stream is reopened as ``retry`` allows."""
        state = Reconnects(self.retry, self.base_url)
        while True:
            try:
                async for event in self._stream(job_id):
                    if state.fresh(event):
                        yield event
                    if event.event == "end":
                        return
                raise StreamBroken("the event stream closed before the job ended")
            except (StreamBroken, httpx.TransportError) as exc:
                await self.sleep(state.broke(exc))

    async def _stream(self, job_id: str) -> AsyncIterator[JobEvent]:
        from httpx_sse import aconnect_sse

        for retry in range(self.retry.attempts):
            async with aconnect_sse(self._http, "GET", f"{job_path(job_id)}/events", timeout=STREAM_TIMEOUT) as src:
                r = src.response
                if r.status_code < 400:
                    async for sse in src.aiter_sse():
                        yield job_event(sse.event, sse.data, sse.id)
                    return
                await r.aread()
                if not self.retry.should_retry(r, retry):
                    raise error_of(r)
                wait = self.retry.wait_s(r, retry)
            await self.sleep(wait)


class AsyncDatasets:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def upload(
        self, source: Source, name: str | None = None, *, filename: str | None = None, progress: Progress | None = None
    ) -> DatasetInfo:
        """As ``Client.datasets.upload`` (the file is read in 64 KiB chunks as it is sent)."""
        fname, f, own = upload_file(source, filename, progress)
        try:
            return await self._c.send(calls.upload(fname, f, name))
        finally:
            if own:
                f.close()

    async def import_(self, path: str, name: str | None = None) -> DatasetInfo:
        return await self._c.send(calls.import_dataset(path, name))

    async def list(self, limit: int = 100, offset: int = 0) -> Page[DatasetInfo]:
        return await self._c.send(calls.list_datasets(limit, offset))

    def iter(self, page_size: int = PAGE_SIZE) -> AsyncIterator[DatasetInfo]:
        return self._c.pages(calls.list_datasets, page_size)

    async def get(self, dataset_id: str) -> DatasetInfo:
        return await self._c.send(calls.get_dataset(dataset_id))

    async def delete(self, dataset_id: str) -> None:
        await self._c.send(calls.delete_dataset(dataset_id))

    async def preview(self, dataset_id: str, per_class: int = 8) -> bytes:
        return await self._c.send(calls.preview(dataset_id, per_class))


class AsyncJobs:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def train(self, dataset: str, preset: str | None = None, **fields: Any) -> JobView:
        return await self._c.send(calls.train(dataset, preset, fields))

    async def list(self, limit: int = 100, offset: int = 0) -> Page[JobView]:
        return await self._c.send(calls.list_jobs(limit, offset))

    def iter(self, page_size: int = PAGE_SIZE) -> AsyncIterator[JobView]:
        return self._c.pages(calls.list_jobs, page_size)

    async def get(self, job_id: str) -> JobView:
        return await self._c.send(calls.get_job(job_id))

    async def cancel(self, job_id: str) -> JobView:
        return await self._c.send(calls.cancel_job(job_id))

    def watch(self, job_id: str) -> AsyncIterator[JobEvent]:
        return self._c.watch_job(job_id)

    async def wait(self, job_id: str) -> JobView:
        last = None
        async for event in self.watch(job_id):
            last = event
        assert last is not None and last.event == "end"
        return last.job


class AsyncModels:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self, limit: int = 100, offset: int = 0) -> Page[ModelSummary]:
        return await self._c.send(calls.list_models(limit, offset))

    def iter(self, page_size: int = PAGE_SIZE) -> AsyncIterator[ModelSummary]:
        return self._c.pages(calls.list_models, page_size)

    async def active(self) -> ModelSummary | None:
        async for m in self.iter():
            if m.active:
                return m
        return None

    async def get(self, version: str) -> ModelView:
        return await self._c.send(calls.get_model(version))

    async def activate(self, version: str) -> Activation:
        return await self._c.send(calls.activate(version))

    async def report(self, version: str) -> QualityReport:
        return await self._c.send(calls.report(version))

    async def report_html(self, version: str) -> str:
        return await self._c.send(calls.report_html(version))

    async def samples(self, version: str) -> bytes:
        return await self._c.send(calls.samples(version))
