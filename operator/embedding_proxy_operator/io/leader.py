"""The Lease that makes one replica the leader: take it, keep it, give it back, and stop the
process the moment it may no longer be held (`logic.leadership` decides; this module calls).

Only the leader runs kopf's watches and handlers, and every write of the process, the
operator's own and kopf's, passes `Elector.fence` first: a replica that has not renewed within
the renew deadline (a stalled process, a network partition, a frozen VM) exits before it writes
anything, and its pod restarts it as a standby. Renewals run in a thread of their own, so that a
busy event loop never delays them (a stopped process stops them all the same). The Lease is
written with merge patches that carry the resourceVersion read.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn

import kopf
from kopf._cogs.clients import api as kopf_api

from ..logic import leadership
from ..logic.leadership import Observed
from ..model import names
from ..model.settings import LEASE_JITTER, LeaseTiming
from .kube import MERGE_PATCH, ApiError, Kube, segment

# Exit status of a replica that lost the Lease (its pod restarts it as a standby).
EXIT_LOST = 4
READS = frozenset({"GET", "HEAD", "OPTIONS"})


class LeadershipLost(Exception):
    """Raised where the process did not exit (an `on_lost` of a test's own)."""


def lease_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{segment(namespace)}/leases"
    return f"{base}/{segment(name)}" if name is not None else base


def _exit(code: int) -> NoReturn:
    logging.shutdown()  # the CRITICAL line must reach the log before the process goes
    os._exit(code)


class Elector:
    def __init__(
        self,
        *,
        identity: str,
        namespace: str,
        name: str,
        timing: LeaseTiming,
        connect: Callable[[], kopf.ConnectionInfo],
        api_timeout: float,
        logger: logging.Logger,
        on_lost: Callable[[int], Any] = _exit,
    ) -> None:
        self.identity, self.namespace, self.name, self.timing = identity, namespace, name, timing
        self.observed = Observed()
        # Monotonic time at which the last successful write of the Lease began (None: not held).
        self.renewed_at: float | None = None
        self._connect, self._timeout, self._logger = connect, api_timeout, logger
        self._on_lost = on_lost
        self._kube: Kube | None = None  # the event loop's (acquire, release)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ---- holding --------------------------------------------------------------------------

    def holding(self) -> bool:
        """Whether this replica may act: it renewed the Lease within the renew deadline."""
        if self.renewed_at is None:
            return False
        return time.monotonic() - self.renewed_at < self.timing.renew_deadline_seconds

    def fence(self, what: str) -> None:
        """Before every write: exit unless the Lease is held."""
        if not self.holding():
            self.lost(f"not renewed within {self.timing.renew_deadline_seconds:g} s, before {what}")

    def lost(self, why: str) -> NoReturn:
        self._logger.critical(
            f"Stopping: this replica ({self.identity}) no longer holds Lease "
            f"{self.namespace}/{self.name}: {why}. Exiting with status {EXIT_LOST}, so that it "
            "starts again as a standby."
        )
        self.renewed_at = None
        self._on_lost(EXIT_LOST)
        raise LeadershipLost(why)

    # ---- the three moves ------------------------------------------------------------------

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease."""
        said: str | None = None
        while True:
            try:
                if await self._attempt(self._client()):
                    self._logger.info(
                        f"Leading: holding Lease {self.namespace}/{self.name} as {self.identity}"
                    )
                    return
                holder = self.observed.holder
                if holder != said:
                    self._logger.info(f"Standing by: Lease {self.name} is held by {holder}")
                    said = holder
            except ApiError as e:
                self._logger.warning(f"Lease {self.namespace}/{self.name}: {e}")
                if e.status == 401:  # credentials expired (a rotated token): log in again
                    await self.close()
                    self._kube = None
            await asyncio.sleep(self.timing.retry_seconds * random.uniform(1, LEASE_JITTER))

    def start_keeping(self) -> None:
        """Renew from a thread of its own, with its own event loop and session: a busy operator
        (a thousand EmbeddingProxies created at once) must not delay its own renewals."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keeper, name="lease keeper", daemon=True)
        self._thread.start()

    async def stop_keeping(self) -> None:
        """End the renewals (at a deliberate stop, before `release`)."""
        if self._thread is not None:
            self._stop.set()
            await asyncio.to_thread(self._thread.join, self.timing.renew_deadline_seconds + 1)
            self._thread = None

    def _keeper(self) -> None:
        try:
            asyncio.run(self._keep())
        except LeadershipLost:
            pass  # said and done (`lost`)
        except BaseException as e:  # the renewals never end but at a deliberate stop
            if not self._stop.is_set():
                self.lost(f"its renewals stopped: {e!r}")

    async def _keep(self) -> None:
        """Renew every retry period until stopped; exit the process when the renew deadline
        passes without a renewal, or another replica holds the Lease."""
        api = Kube(self._connect(), self._timeout)
        try:
            while not await asyncio.to_thread(self._stop.wait, self.timing.retry_seconds):
                self.fence("renewing the Lease")
                assert self.renewed_at is not None
                deadline = self.renewed_at + self.timing.renew_deadline_seconds
                while not self._stop.is_set():
                    renewed = False
                    try:
                        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                            renewed = await self._attempt(api)
                    except (ApiError, TimeoutError) as e:
                        self._logger.warning(f"renewing Lease {self.namespace}/{self.name}: {e!r}")
                        if isinstance(e, ApiError) and e.status == 401:
                            await api.close()
                            api = Kube(self._connect(), self._timeout)
                    if renewed:
                        break
                    if self.observed.holder not in ("", self.identity):
                        self.lost(f"{self.observed.holder} holds it")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.fence("renewing the Lease")
                    await asyncio.sleep(min(self.timing.retry_seconds, left))
        finally:
            await api.close()

    async def release(self) -> None:
        """Give the Lease back on a deliberate stop, so that a standby takes over at once."""
        if not self.holding():
            return
        spec = leadership.released(self.observed, datetime.datetime.now(datetime.UTC))
        patch = leadership.guarded_patch(spec, self.observed.resource_version)
        try:
            await self._client().request(
                "PATCH", lease_path(self.namespace, self.name), patch, MERGE_PATCH
            )
        except ApiError as e:
            self._logger.warning(f"could not give Lease {self.name} back: {e}")
        else:
            self._logger.info(f"Gave Lease {self.namespace}/{self.name} back")
        self.renewed_at = None

    async def close(self) -> None:
        if self._kube is not None:
            await self._kube.close()

    # ---- one round ------------------------------------------------------------------------

    async def _attempt(self, api: Kube) -> bool:
        """Read the Lease; write this replica into it when it may. True when it holds it."""
        began = time.monotonic()
        try:
            current = await api.get(lease_path(self.namespace, self.name))
            self.observed.see(current, time.monotonic())
            if not leadership.may_take(self.observed, self.identity, self.timing, time.monotonic()):
                return False
            wall = datetime.datetime.now(datetime.UTC)
            spec = leadership.record(self.observed, self.identity, self.timing, wall)
            if current is None:
                labels = {names.LABEL_PART_OF: names.PART_OF}
                body = leadership.lease(self.name, self.namespace, spec, labels)
                written = await api.request("POST", lease_path(self.namespace), body)
            else:
                patch = leadership.guarded_patch(spec, self.observed.resource_version)
                path = lease_path(self.namespace, self.name)
                written = await api.request("PATCH", path, patch, MERGE_PATCH)
        except ApiError as e:
            if e.status == 409:  # another replica wrote it first: read again next round
                return False
            raise
        self.observed.see(written, time.monotonic())
        self.renewed_at = began
        return True

    def _client(self) -> Kube:
        if self._kube is None:
            self._kube = Kube(self._connect(), self._timeout)
        return self._kube


def fence_kopf(fence: Callable[[str], None]) -> None:
    """Put `fence` before every write kopf sends itself (finalizers, its annotations, Events),
    before each of its retries too: kopf draws the next backoff just before each attempt. This
    wraps one internal function of kopf (kopf._cogs.clients.api.request, which all of kopf's
    API calls go through); tests/operator/test_leader_election.py checks the result on a real
    API server, so a kopf upgrade that moves it fails there."""
    original = getattr(kopf_api.request, "__wrapped_by_fence__", kopf_api.request)

    async def fenced(method: str, url: str, **kwargs: Any) -> Any:
        if method.upper() not in READS:
            settings = kwargs["settings"]
            backoffs = kwargs.get("backoffs")
            if backoffs is None:
                backoffs = settings.networking.error_backoffs
            kwargs["backoffs"] = _checked(backoffs, fence, f"{method.upper()} {url}")
        return await original(method, url, **kwargs)

    fenced.__wrapped_by_fence__ = original  # type: ignore[attr-defined]
    kopf_api.request = fenced  # type: ignore[assignment]


def _checked(
    backoffs: float | Iterable[float], fence: Callable[[str], None], what: str
) -> Iterator[float | None]:
    """kopf's backoffs, with the fence called before each attempt (the last one included)."""
    for backoff in backoffs if isinstance(backoffs, Iterable) else [backoffs]:
        fence(what)
        yield backoff
    fence(what)
    yield None
