"""A dynamic batcher: concurrent generation requests are gathered into one inference call.

Like Triton's dynamic batcher: a request waits at most ``max_wait_s`` for others to join it,
and a batch holds at most ``max_batch`` latent rows. Requests for different model versions are
never mixed. Inference runs in a thread, off the event loop; one batch runs at a time (ONNX
Runtime already uses every core inside a call), while the next one gathers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.inference import LoadedModel

log = logging.getLogger(__name__)

BatchObserver = Callable[[int, float], None]  # (rows in the batch, inference seconds)


@dataclass
class _Pending:
    model: LoadedModel
    z: np.ndarray
    future: asyncio.Future[np.ndarray] = field(repr=False)


class DynamicBatcher:
    def __init__(self, max_batch: int = 64, max_wait_s: float = 0.005, observer: BatchObserver | None = None) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.observer = observer
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="drawai-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def infer(self, model: LoadedModel, z: np.ndarray) -> np.ndarray:
        """Images for ``z`` on ``model``, computed in whatever batch forms around this request."""
        if self._queue is None:
            raise RuntimeError("batcher not started")
        loop = asyncio.get_running_loop()
        parts = []
        for start in range(0, len(z), self.max_batch):  # a request larger than a batch is split
            fut: asyncio.Future[np.ndarray] = loop.create_future()
            await self._queue.put(_Pending(model, z[start : start + self.max_batch], fut))
            parts.append(fut)
        return np.concatenate(await asyncio.gather(*parts))

    async def _gather(self, first: _Pending) -> list[_Pending]:
        assert self._queue is not None
        batch, rows = [first], len(first.z)
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if nxt.model is not first.model or rows + len(nxt.z) > self.max_batch:
                await self._run_batch(batch)  # keep batches homogeneous and within the limit
                batch, rows = [nxt], 0
                first = nxt
            else:
                batch.append(nxt)
            rows += len(nxt.z)
        return batch

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            batch = [first]
            try:
                batch = await self._gather(first)
                await self._run_batch(batch)
            except Exception as exc:  # the loop must never die: every later request would hang
                log.exception("batcher failed")
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]  # a client that went away is skipped
        if not live:
            return
        model = live[0].model
        z = np.concatenate([p.z for p in live]) if len(live) > 1 else live[0].z
        t0 = time.perf_counter()
        try:
            out = await asyncio.to_thread(model.run, z)
        except Exception as exc:
            log.exception("inference failed on model %s", model.version)
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        if self.observer is not None:
            try:
                self.observer(len(z), time.perf_counter() - t0)
            except Exception:  # metrics must never fail a request
                log.exception("batch observer failed")
        start = 0
        for p in live:
            n = len(p.z)
            if not p.future.done():
                p.future.set_result(out[start : start + n])
            start += n
