"""What the operator keeps between handler calls, typed: one `State` per process, in kopf's memo.

kopf hands each object's handlers a shallow copy of the operator's memo, so the one `State` put
there at start-up (or at the first login, whichever runs first) is shared by every handler."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from ..io import metrics
from ..io.fetch import MetricsFetcher
from ..io.kube import Kube
from ..io.leader import Elector
from ..logic.reloads import Loaded
from ..model.settings import (
    Options,
    native_from_version,
    sleep_action_from_version,
)

Key = tuple[str, str]  # an EmbeddingProxy's (namespace, name)
# Longest Event message posted (an API error can quote a whole object).
MAX_EVENT_MESSAGE = 400


@dataclass
class State:
    options: Options
    metrics: metrics.OperatorMetrics = field(default_factory=metrics.OperatorMetrics)
    # The credentials of the last login; `client()` follows them.
    connection: kopf.ConnectionInfo | None = None
    # Whether the cluster runs native sidecars / the preStop `sleep` action (None: not asked yet).
    native: bool | None = None
    sleep_action: bool | None = None
    # Per EmbeddingProxy: one reconciliation at a time; Events already posted with `once`; the
    # daemon's wake-up call.
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    notices: dict[Key, set[tuple[str, str]]] = field(default_factory=dict)
    wakeups: dict[Key, asyncio.Event] = field(default_factory=dict)
    # Per EmbeddingProxy, per pod: its proxy's reload counts as last seen (`logic.reloads`).
    reloads: dict[Key, dict[str, Loaded]] = field(default_factory=dict)
    # Whether the admission webhook's configuration holds this replica's CA (Webhook mode); the
    # CAs it publishes, and the operator's own namespace (which the webhook leaves out).
    webhook_published: bool = False
    webhook_bundle: bytes | None = None
    webhook_namespace: str = ""
    # Set by the operator's clean-up: kopf may still run a daemon's poll after it.
    closed: bool = False
    # The Lease that makes this replica the leader.
    elector: Elector | None = None
    _kube: Kube | None = None
    _kube_info: kopf.ConnectionInfo | None = None
    _fetcher: MetricsFetcher | None = None

    def client(self) -> Kube:
        """The API client for the current credentials (a re-login gives a new one)."""
        if self._kube is None or self._kube_info is not self.connection:
            if self._kube is not None:
                asyncio.get_running_loop().create_task(self._kube.close())
            assert self.connection is not None, "no login yet"
            self._kube = Kube(self.connection, self.options.api_timeout_seconds, self.fence)
            self._kube_info = self.connection
        return self._kube

    def fence(self, what: str) -> None:
        """Before every write: only the leader writes (see `leading`)."""
        if self.elector is None:
            raise RuntimeError(f"{what}: a write before this replica took the Lease")
        self.elector.fence(what)

    def fetcher(self) -> MetricsFetcher:
        if self._fetcher is None:
            self._fetcher = MetricsFetcher(
                self.options.scrape_timeout_seconds, self.options.scrape_max_bytes
            )
        return self._fetcher

    async def native_supported(self) -> bool:
        if self.native is None:
            choice = self.options.native_sidecars
            if choice != "auto":
                self.native = choice == "true"
            else:
                major, minor = await self._version()
                self.native = native_from_version(major, minor)
        return self.native

    async def sleep_action_supported(self) -> bool:
        if self.sleep_action is None:
            self.sleep_action = sleep_action_from_version(*await self._version())
        return self.sleep_action

    async def _version(self) -> tuple[str, str]:
        version = await self.client().request("GET", "/version")
        return str(version.get("major", "0")), str(version.get("minor", "0"))

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault((namespace, name), asyncio.Lock())

    def wakeup(self, namespace: str, name: str) -> asyncio.Event:
        """Set to make the EmbeddingProxy's daemon poll at once."""
        return self.wakeups.setdefault((namespace, name), asyncio.Event())

    def forget(self, namespace: str, name: str) -> None:
        """Drop what was kept for a deleted EmbeddingProxy."""
        self.metrics.forget(namespace, name)
        for kept in (self.notices, self.locks, self.wakeups, self.reloads):
            kept.pop((namespace, name), None)

    def post_event(
        self,
        proxy: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        once: bool = False,
    ) -> None:
        """An Event on the EmbeddingProxy; with `once`, only when it is news (warnings would
        otherwise repeat on every Deployment event)."""
        if once:
            key = (proxy["metadata"]["namespace"], proxy["metadata"]["name"])
            seen = self.notices.setdefault(key, set())
            if (reason, message) in seen:
                return
            seen.add((reason, message))
        if len(message) > MAX_EVENT_MESSAGE:  # an Event is a line, not a dump
            message = message[: MAX_EVENT_MESSAGE - 1] + "…"
        kopf.event(dict(proxy), type=type_, reason=reason, message=message)

    def forget_notices(self, proxy: Mapping[str, Any], reason: str) -> None:
        """Let the next `once` event of this reason through again."""
        key = (proxy["metadata"]["namespace"], proxy["metadata"]["name"])
        seen = self.notices.get(key, set())
        seen -= {n for n in seen if n[0] == reason}

    async def close(self) -> None:
        self.closed = True
        if self._kube is not None:
            await self._kube.close()
        if self._fetcher is not None:
            await self._fetcher.close()
        await self.metrics.close()


def state_of(memo: kopf.Memo) -> State:
    """The process's State, made at the first call (start-up or login, whichever comes first)."""
    state: State | None = getattr(memo, "state", None)
    if state is None:
        state = memo.state = State(Options.from_env(os.environ))
    return state
