"""The fence in front of every write: a replica whose Lease is not renewed within the renew
deadline stops before it sends anything, whether the write is the operator's or kopf's."""

from __future__ import annotations

import logging
import time

import kopf
import pytest

from embedding_proxy_operator.io import leader
from embedding_proxy_operator.io.kube import ApiError, Kube
from embedding_proxy_operator.io.leader import EXIT_LOST, Elector, LeadershipLost
from embedding_proxy_operator.model.settings import LeaseTiming

# Nothing listens here: a request that got through the fence fails as unreachable.
NOWHERE = kopf.ConnectionInfo(server="https://127.0.0.1:9")


def elector(exits: list[int]) -> Elector:
    return Elector(
        identity="me",
        namespace="ops",
        name="lease",
        timing=LeaseTiming(15, 10, 2),
        connect=lambda: NOWHERE,
        api_timeout=1,
        logger=logging.getLogger("test"),
        on_lost=exits.append,
    )


def test_the_fence_holds_only_within_the_renew_deadline() -> None:
    exits: list[int] = []
    chosen = elector(exits)
    with pytest.raises(LeadershipLost):
        chosen.fence("PATCH before any renewal")
    chosen.renewed_at = time.monotonic() - 9.5
    chosen.fence("PATCH 9.5 s after a renewal")
    chosen.renewed_at = time.monotonic() - 10.0
    with pytest.raises(LeadershipLost, match="not renewed within 10 s"):
        chosen.fence("PATCH 10 s after a renewal")
    assert exits == [EXIT_LOST, EXIT_LOST]
    assert not chosen.holding()


async def test_the_operators_writes_stop_at_the_fence_and_its_reads_pass() -> None:
    fenced: list[str] = []

    def fence(what: str) -> None:
        fenced.append(what)
        raise LeadershipLost(what)

    api = Kube(NOWHERE, 1, fence)
    try:
        with pytest.raises(LeadershipLost):
            await api.request("PATCH", "/api/v1/namespaces/a/configmaps/b", {})
        with pytest.raises(ApiError, match="Unreachable"):
            await api.request("GET", "/api/v1/namespaces/a/configmaps/b")
    finally:
        await api.close()
    assert fenced == ["PATCH /api/v1/namespaces/a/configmaps/b"]


def test_kopfs_retries_each_pass_the_fence() -> None:
    """kopf draws the next backoff just before each attempt: the fence runs before each."""
    calls: list[str] = []
    allowed = 2

    def fence(what: str) -> None:
        calls.append(what)
        if len(calls) > allowed:
            raise LeadershipLost(what)

    drawn = []
    with pytest.raises(LeadershipLost):
        for backoff in leader._checked((1.0, 2.0, 4.0), fence, "PATCH x"):
            drawn.append(backoff)  # an attempt, failed: kopf sleeps `backoff` and draws again
    assert drawn == [1.0, 2.0] and len(calls) == 3
    # The last attempt (no backoff after it) is fenced too.
    calls.clear()
    allowed = 10
    assert list(leader._checked((), fence, "PATCH x")) == [None] and len(calls) == 1
