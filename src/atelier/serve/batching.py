"""Dynamic batching: concurrent small generation requests to one model run as one forward pass.

Each request brings its own seed, class and truncation; its latents are drawn exactly as
``Pipeline.sample`` draws them (one generator seeded per request), the latents of every waiting request
are stacked, decoded in one call of the model's ``generate``, and split again. A request therefore gets
the same images whether it ran alone or with company (the networks run in eval mode: batch norm uses
its running statistics, so images do not depend on their neighbours).

The collector takes the first waiting request and whatever else is already waiting; when the last
batch held more than one request (there is company to wait for) it also waits up to ``max_wait``
seconds for more, up to ``max_batch`` images, while a lone client is served at once. The forward pass
runs in a worker thread so the event loop keeps accepting. At most ``max_pending`` images wait: beyond
that :class:`Overloaded` (answered 429 with Retry-After) rather than a queue that grows without bound.
Hand-written: the model servers that batch (Triton, TorchServe, Ray Serve) are whole servers, not a
component to put in front of a FastAPI route.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import torch

from atelier.data.base import to_uint8
from atelier.models.latents import check_truncation


@dataclass
class GenerateRequest:
    n: int
    seed: int
    label: int | None = None
    truncation: float | None = None


@dataclass
class BatchStats:
    requests: int = 0
    images: int = 0
    batches: int = 0
    largest: int = 0

    def as_dict(self) -> dict:
        return {"requests": self.requests, "images": self.images, "batches": self.batches, "largest": self.largest,
                "mean_batch_images": self.images / self.batches if self.batches else 0.0}


def latents_for(model, request: GenerateRequest) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The latents and labels ``Pipeline.sample(n, seed=, label=, truncation=)`` would use."""
    generator = torch.Generator().manual_seed(request.seed)
    z = model.sample_latents(request.n, generator=generator, truncation=check_truncation(request.truncation))
    labels = None
    if getattr(model, "conditional", False):
        k = model.config.num_classes
        labels = (torch.full((request.n,), request.label, dtype=torch.long) if request.label is not None
                  else torch.arange(request.n) % k)
    return z, labels


def generate_batch(model, requests: list[GenerateRequest]) -> list[torch.Tensor]:
    """One forward pass for every request; (n, C, H, W) uint8 per request."""
    parts = [latents_for(model, r) for r in requests]
    z = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts]) if parts[0][1] is not None else None
    with torch.no_grad():
        images = to_uint8(model.generate(z, labels, batch_size=max(1, z.shape[0])))
    return list(torch.split(images, [r.n for r in requests]))


class Overloaded(Exception):
    """More images are waiting for this model than its batcher accepts."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Waiting:
    request: GenerateRequest
    future: asyncio.Future


@dataclass
class DynamicBatcher:
    """Collects :class:`GenerateRequest` for one model; ``await submit(request)`` gives its images."""

    model: object
    max_batch: int = 64
    max_wait: float = 0.005
    max_pending: int | None = None  # images waiting at most (default: 32 batches)
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self) -> None:
        self._queue: asyncio.Queue[_Waiting] | None = None
        self._task: asyncio.Task | None = None
        self._carry: _Waiting | None = None
        self._lock = threading.Lock()  # one forward pass at a time per model
        self._pending = 0
        self._company = False  # the last batch held several requests: waiting for more pays
        if self.max_pending is None:
            self.max_pending = 32 * self.max_batch

    async def submit(self, request: GenerateRequest) -> torch.Tensor:
        if self._pending + request.n > self.max_pending:
            raise Overloaded(f"{self._pending} images are already waiting for this model (at most "
                             f"{self.max_pending}); try again in a moment")
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        self._pending += request.n
        try:
            await self._queue.put(_Waiting(request, future))
            return await future
        finally:
            self._pending -= request.n

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _collect(self) -> list[_Waiting]:
        assert self._queue is not None
        first = self._carry if self._carry is not None else await self._queue.get()
        self._carry = None
        batch, total = [first], first.request.n
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while total < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                timeout = deadline - loop.time()
                if timeout <= 0 or not self._company:  # alone: no one to wait for
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), timeout)
                except (asyncio.TimeoutError, TimeoutError):
                    break
            if total + nxt.request.n > self.max_batch:
                self._carry = nxt  # first in the next batch
                break
            batch.append(nxt)
            total += nxt.request.n
        self._company = len(batch) > 1
        return batch

    def _forward(self, requests: list[GenerateRequest]) -> list[torch.Tensor]:
        with self._lock:
            return generate_batch(self.model, requests)

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            batch = [w for w in batch if not w.future.cancelled()]  # the client went away
            if not batch:
                continue
            requests = [w.request for w in batch]
            try:
                results = await asyncio.to_thread(self._forward, requests)
            except Exception as exc:  # every waiting request learns what went wrong
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(exc)
                continue
            self.stats.requests += len(batch)
            self.stats.batches += 1
            n = sum(r.n for r in requests)
            self.stats.images += n
            self.stats.largest = max(self.stats.largest, n)
            for w, images in zip(batch, results):
                if not w.future.done():
                    w.future.set_result(images)
