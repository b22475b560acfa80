"""The "GPU": a cost model for one forward pass, and TEI's queue and batching in front of it.

TEI (core/src/queue.rs, core/src/infer.rs) keeps one FIFO queue of tokenized inputs. A batching task
takes the next batch from its head as soon as the backend can accept one: no time window, inputs
added until the next would push the batch over `max_batch_tokens` (or it holds
`max_batch_requests`). One batch runs on the GPU while the next is already taken and waiting, so
inputs that arrive meanwhile wait for the batch after that. Inputs whose caller went away are
skipped. The forward pass itself is modelled by a sleep whose length follows `CostModel`: the
simulator uses no CPU for it (`torch_backend.TorchEngine` runs a real encoder instead).

With internal batching off, each request is its own forward pass, run one after another: a server
that does no batching of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import TeiError


@dataclass(frozen=True)
class CostModel:
    """Seconds for one forward pass, from the tokens in the batch.

    A pass costs `base_ms` whatever its size up to `knee_tokens` (the GPU is not yet busy), then
    `per_token_us` for every token beyond. The defaults follow measurements of a random-weight
    BERT-base on an H100 (eager PyTorch, 128-token inputs): about 6 ms for up to 64 inputs
    (8,192 tokens), 15.4 ms for 256 inputs (32,768 tokens).
    """

    base_ms: float = 6.0
    knee_tokens: int = 8192
    per_token_us: float = 0.4

    def seconds(self, batch_tokens: int) -> float:
        over = max(0, batch_tokens - self.knee_tokens)
        return (self.base_ms + over * self.per_token_us / 1000.0) / 1000.0


@dataclass(frozen=True, slots=True)
class Forward:
    """What one input learns about the pass that computed it (TEI's response metadata)."""

    queue_seconds: float
    inference_seconds: float
    batch_size: int
    vector: Any = None  # the pooled output of a real forward pass; None for the cost model


@dataclass(eq=False, slots=True)
class Entry:
    tokens: int
    group: int  # inputs submitted together (one request) share a group
    future: asyncio.Future[Forward]
    enqueued: float
    payload: Any = None  # what a real forward pass reads (the tokenized input)


def take_batch(
    queue: deque[Entry],
    *,
    max_batch_tokens: int,
    max_batch_requests: int | None = None,
    per_request: bool = False,
) -> list[Entry]:
    """Take the next batch from the head of `queue` (TEI's `Queue::next_batch`).

    Skips entries whose caller went away. With `per_request`, the batch is exactly the first
    live group, whatever its size (a server without batching runs each request as it came).
    """
    batch: list[Entry] = []
    tokens = 0
    while queue:
        entry = queue[0]
        if entry.future.done():
            queue.popleft()
            continue
        if per_request:
            if batch and entry.group != batch[0].group:
                break
        elif tokens + entry.tokens > max_batch_tokens and batch:
            break
        batch.append(queue.popleft())
        tokens += entry.tokens
        if not per_request and max_batch_requests is not None and len(batch) >= max_batch_requests:
            break
    return batch


class Permits:
    """A fair counting semaphore: TEI's per-input `max_concurrent_requests` limit.

    `try_acquire` fails while anyone is waiting, as tokio's semaphore hands released permits to
    its waiters first.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.available = total
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_use(self) -> int:
        return self.total - self.available

    @property
    def free(self) -> int:
        """Permits `try_acquire` can take now."""
        return 0 if self._waiters else self.available

    def try_acquire(self, n: int = 1) -> bool:
        if self.free < n:
            return False
        self.available -= n
        return True

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed over just as the caller left: pass it on
            raise

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break
            else:
                self.available += 1


OnForward = Callable[[int, int, float], None]  # (inputs, tokens, seconds) after each pass


@dataclass
class Engine:
    """The queue, the batching task and the backend task(s) of one simulated TEI."""

    cost: CostModel
    max_batch_tokens: int
    max_batch_requests: int | None = None
    internal_batching: bool = True
    replicas: int = 1
    on_forward: OnForward | None = None
    # What /info reports of the model behind the engine.
    model_dtype: str = "float16"
    pooling: str = "cls"
    queue: deque[Entry] = field(default_factory=deque)
    _groups: itertools.count = field(default_factory=itertools.count)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        # At most one batch taken ahead of those running, as TEI prepares the next batch early.
        self._slots = asyncio.Semaphore(self.replicas + 1)
        self._ready: asyncio.Queue[list[Entry]] = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._batching(), name="tei-sim-batching")]
        self._tasks += [
            asyncio.create_task(self._backend(), name=f"tei-sim-backend-{i}")
            for i in range(self.replicas)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for entry in self.queue:
            entry.future.cancel()
        self.queue.clear()

    def submit(
        self, tokens: list[int], payloads: Sequence[Any] | None = None
    ) -> list[asyncio.Future[Forward]]:
        """Queue inputs of one request (all at once, so a batch can take them together)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        group = next(self._groups)
        futures = []
        for i, n in enumerate(tokens):
            future: asyncio.Future[Forward] = loop.create_future()
            self.queue.append(Entry(n, group, future, now, payloads[i] if payloads else None))
            futures.append(future)
        self._wakeup.set()
        return futures

    def _head_is_live(self) -> bool:
        while self.queue and self.queue[0].future.done():
            self.queue.popleft()
        return bool(self.queue)

    async def _batching(self) -> None:
        while True:
            await self._slots.acquire()
            while not self._head_is_live():
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = take_batch(
                self.queue,
                max_batch_tokens=self.max_batch_tokens,
                max_batch_requests=self.max_batch_requests,
                per_request=not self.internal_batching,
            )
            self._ready.put_nowait(batch)

    async def _backend(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._ready.get()
            try:
                live = [e for e in batch if not e.future.done()]
                if not live:
                    continue
                tokens = sum(e.tokens for e in live)
                started = loop.time()
                try:
                    vectors = await self.forward(live, tokens)
                except TeiError as e:  # a pass that failed fails its inputs, not the engine
                    for entry in live:
                        if not entry.future.done():
                            entry.future.set_exception(e)
                    continue
                took = loop.time() - started
                if self.on_forward is not None:
                    self.on_forward(len(live), tokens, took)
                for e, vector in zip(live, vectors, strict=True):
                    if not e.future.done():
                        e.future.set_result(Forward(started - e.enqueued, took, len(live), vector))
            finally:
                self._slots.release()

    async def forward(self, batch: list[Entry], tokens: int) -> Sequence[Any]:
        """One forward pass over `batch`: here a sleep as long as the cost model says, with no
        output per input."""
        await asyncio.sleep(self.cost.seconds(tokens))
        return [None] * len(batch)
