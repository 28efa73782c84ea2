"""A dynamic batcher: concurrent generation requests are gathered into batches, several of which run at once.

Like Triton's dynamic batcher: a request waits at most ``max_wait_s`` from its arrival for others to
join it (its max queue delay: time spent waiting for a busy stream counts), and a batch holds at most
``max_batch / streams`` latent rows (so ``max_batch`` rows keep every stream busy; a larger request
is split). Requests for different model versions are never mixed.
Up to ``model.streams`` batches of a model run at once (the engine's parallel inference streams,
chosen by calibration or ``DRAWAI_INFER_STREAMS``), each on a thread of the batcher's own
inference pool; while every stream is busy the next batch keeps gathering, so it grows with the
load. PNG/zip encoding runs on a separate pool (``encode``), so it never queues
behind inference, nor inference behind it (the route encodes a single image on the event loop:
about 0.1 ms, less than the thread hop).

Backpressure: ``admit(rows)`` reserves a request's rows before any work is done for it. The rows
stay counted (``inflight_rows``) until the reservation is released (the route releases it once the
response body is built), and a request whose rows do not fit under ``max_queued_rows`` raises
``Overloaded`` at once. A request larger than the bound is admitted when nothing else is in flight,
so every valid count can be served; it waits alone. ``Retry-After`` counts every row ahead of the
refused request, including the rows refused in the last second (their clients come back too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from service.inference import LoadedModel

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_STREAMS = 64  # threads of the inference pool: an upper bound; a model's own streams limit how many run

BatchObserver = Callable[[int, float], None]  # (rows in the batch, inference seconds)
EWMA_WEIGHT = 0.2  # weight of the newest batch in the recent time per row that Retry-After is estimated from
# Under uvicorn's keep-alive timeout (5 s): a client that waits longer finds its idle connection closed, and a
# POST on a connection the server just closed fails (load.py counted connection errors with a 30 s cap).
RETRY_AFTER_MAX_S = 4


class Overloaded(Exception):
    """More rows are in flight than ``DRAWAI_MAX_QUEUED_ROWS`` allows: answered 429 with ``Retry-After``."""

    def __init__(self, rows: int, inflight: int, limit: int, retry_after_s: int) -> None:
        self.rows, self.inflight, self.limit, self.retry_after_s = rows, inflight, limit, retry_after_s
        super().__init__(
            f"overloaded: {inflight} images are being generated and {rows} more would pass the limit of "
            f"{limit} (DRAWAI_MAX_QUEUED_ROWS); retry in {retry_after_s} s"
        )


class RecentRows:
    """Rows counted in the current and the previous whole second of ``clock``: ``recent()`` is about one
    second's worth (the previous second, plus the current one as it fills)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock, self._second, self._now, self._before = clock, 0, 0, 0

    def _roll(self) -> None:
        second = int(self._clock())
        if second != self._second:
            self._before = self._now if second == self._second + 1 else 0
            self._second, self._now = second, 0

    def add(self, rows: int) -> None:
        self._roll()
        self._now += rows

    def recent(self) -> int:
        self._roll()
        return self._before + self._now


class Admission:
    """A request's reserved rows; ``release`` (or leaving the ``with`` block) frees them, once."""

    def __init__(self, batcher: DynamicBatcher, rows: int) -> None:
        self._batcher, self.rows, self._released = batcher, rows, False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._batcher._inflight -= self.rows

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


@dataclass
class _Pending:
    model: LoadedModel
    z: np.ndarray
    future: asyncio.Future[np.ndarray] = field(repr=False)
    labels: np.ndarray | None = None  # int64 class indices, for a conditional model
    queued_at: float = 0.0  # the batcher's clock when it joined the queue: max_wait_s counts from here


class DynamicBatcher:
    def __init__(
        self,
        max_batch: int = 64,
        max_wait_s: float = 0.005,
        observer: BatchObserver | None = None,
        max_queued_rows: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_batch = max_batch
        self.clock = clock
        self.max_wait_s = max_wait_s
        self.observer = observer
        self.max_queued_rows = max_queued_rows  # None: no bound
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight = 0
        self._row_s: float | None = None  # recent inference seconds per row (EWMA over batches)
        self._refused = RecentRows()
        self.executor = ThreadPoolExecutor(max_workers=MAX_STREAMS, thread_name_prefix="drawai-inference")
        self.encoder = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="drawai-encode")
        self._running: set[asyncio.Task[None]] = set()  # batches being inferred
        self._stream_freed: asyncio.Event | None = None

    @property
    def inflight_rows(self) -> int:
        """Rows admitted and not yet released: waiting, in the running batch, or being encoded."""
        return self._inflight

    def refusal(self, rows: int) -> Overloaded | None:
        """The ``Overloaded`` that ``admit(rows)`` would raise now, or None if ``rows`` fit (records nothing)."""
        limit = self.max_queued_rows
        if limit is not None and self._inflight > 0 and self._inflight + rows > limit:
            return Overloaded(rows, self._inflight, limit, self.retry_after_s(rows))
        return None

    def admit(self, rows: int) -> Admission:
        """Reserve ``rows`` for a request, or raise ``Overloaded`` at once (no await: atomic on the loop)."""
        refused = self.refusal(rows)
        if refused is not None:
            self.count_refusal(rows)
            raise refused
        self._inflight += rows
        return Admission(self, rows)

    def count_refusal(self, rows: int) -> None:
        """A request of ``rows`` was answered 429: its client will come back, ahead of later ones."""
        self._refused.add(rows)

    def retry_after_s(self, rows: int) -> int:
        """Whole seconds until ``rows`` more would likely be served: every row ahead of them (in flight, and
        refused in the last second: those clients retry too) times the recent inference time per row.

        Counting the refused rows spreads a crowd of retrying clients out instead of bringing all of them
        back after the same second (at 256 clients on 2 cores it cut refusals by half, see load.py).
        """
        ahead = self._inflight + rows + self._refused.recent()
        seconds = ahead * (self._row_s or 0.0)
        return min(RETRY_AFTER_MAX_S, max(1, math.ceil(seconds)))

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._stream_freed = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="drawai-batcher")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.encoder.shutdown(wait=False, cancel_futures=True)

    def batch_rows(self, model: LoadedModel) -> int:
        """Most rows of one batch of ``model``: ``max_batch`` spread over its streams, so that a full batch's worth
        of rows (one large request, or many small ones) keeps every stream busy."""
        return max(1, math.ceil(self.max_batch / max(1, model.streams)))

    @property
    def running_batches(self) -> int:
        return len(self._running)

    async def encode(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` (PNG/zip encoding) on the encoding pool, never behind inference."""
        return await asyncio.get_running_loop().run_in_executor(self.encoder, fn, *args)

    async def infer(self, model: LoadedModel, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Images for ``z`` (and the class indices ``labels`` of a conditional model) on ``model``, computed in
        whatever batch forms around this request."""
        if self._queue is None:
            raise RuntimeError("batcher not started")
        loop = asyncio.get_running_loop()
        parts = []
        rows = self.batch_rows(model)
        for start in range(0, len(z), rows):  # a request larger than a batch is split (over the streams)
            fut: asyncio.Future[np.ndarray] = loop.create_future()
            part = slice(start, start + rows)
            pending = _Pending(model, z[part], fut, None if labels is None else labels[part], self.clock())
            await self._queue.put(pending)
            parts.append(fut)
        return np.concatenate(await asyncio.gather(*parts))

    async def _gather(self, first: _Pending) -> tuple[list[_Pending], _Pending | None]:
        """``first`` and what joins it until ``max_wait_s`` after ``first`` was queued; the request that could not
        join (another model, or past ``max_batch``) comes back to start the next batch.

        The wait counts from the first request's arrival, as Triton's max queue delay does: a request that already
        waited for a busy stream goes at once with whatever queued meanwhile, rather than leave the freed stream
        idle for another ``max_wait_s`` (16 clients x count=1: 10-20 % of the engine's time)."""
        assert self._queue is not None
        batch, rows, limit = [first], len(first.z), self.batch_rows(first.model)
        deadline = first.queued_at + self.max_wait_s
        while rows < limit:
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if nxt.model is not first.model or rows + len(nxt.z) > limit:
                return batch, nxt  # keep batches homogeneous and within the limit
            batch.append(nxt)
            rows += len(nxt.z)
        return batch, None

    async def _free_stream(self, model: LoadedModel) -> None:
        """Wait until fewer than ``model.streams`` batches run."""
        assert self._stream_freed is not None
        while len(self._running) >= max(1, model.streams):
            self._stream_freed.clear()
            await self._stream_freed.wait()

    async def _run(self) -> None:
        assert self._queue is not None
        carried: _Pending | None = None
        while True:
            first = carried if carried is not None else await self._queue.get()
            carried, batch = None, [first]
            try:
                await self._free_stream(first.model)  # requests keep queueing meanwhile: the batch grows
                batch, carried = await self._gather(first)
                free = max(1, first.model.streams - len(self._running))
                for part in _spread(batch, free):  # idle streams share what gathered, rather than wait for more
                    task = asyncio.create_task(self._run_batch(part), name="drawai-batch")
                    self._running.add(task)
                    task.add_done_callback(self._batch_done)
            except Exception as exc:  # the loop must never die: every later request would hang
                log.exception("batcher failed")
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._stream_freed is not None:
            self._stream_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("batch failed", exc_info=task.exception())

    async def _run_batch(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]  # a client that went away is skipped
        if not live:
            return
        model = live[0].model
        z = np.concatenate([p.z for p in live]) if len(live) > 1 else live[0].z
        labels = _labels_of(live)
        t0 = time.perf_counter()
        try:
            out = await asyncio.get_running_loop().run_in_executor(self.executor, model.run, z, labels)
        except Exception as exc:
            log.exception("inference failed on model %s", model.version)
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        seconds = time.perf_counter() - t0
        per_row = seconds / len(z) / max(1, model.streams)  # streams run side by side: rows finish that much faster
        self._row_s = per_row if self._row_s is None else EWMA_WEIGHT * per_row + (1 - EWMA_WEIGHT) * self._row_s
        if self.observer is not None:
            try:
                self.observer(len(z), seconds)
            except Exception:  # metrics must never fail a request
                log.exception("batch observer failed")
        start = 0
        for p in live:
            n = len(p.z)
            if not p.future.done():
                p.future.set_result(out[start : start + n])
            start += n


def _labels_of(batch: list[_Pending]) -> np.ndarray | None:
    """The batch's class indices (a batch holds one model's rows: all have labels, or none has)."""
    if batch[0].labels is None:
        return None
    return np.concatenate([p.labels for p in batch if p.labels is not None])


def _spread(batch: list[_Pending], streams: int) -> list[list[_Pending]]:
    """``batch`` cut into at most ``streams`` consecutive groups of about equal rows (whole requests each): with
    one stream per core, a batch on one stream would leave the other cores idle while the clients wait for it."""
    if streams <= 1 or len(batch) <= 1:
        return [batch]
    target = math.ceil(sum(len(p.z) for p in batch) / streams)
    groups: list[list[_Pending]] = [[]]
    rows = 0
    for p in batch:
        if rows >= target and len(groups) < streams:
            groups.append([])
            rows = 0
        groups[-1].append(p)
        rows += len(p.z)
    return groups
