"""Leader election's decisions (client-go's semantics), without an API server."""

from __future__ import annotations

import datetime

import pytest

from embedding_proxy_operator.logic import leadership
from embedding_proxy_operator.logic.leadership import Observed
from embedding_proxy_operator.model.settings import LeaseTiming

TIMING = LeaseTiming(lease_seconds=15, renew_deadline_seconds=10, retry_seconds=2)
WALL = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC)


def lease(holder: str | None, version: str = "7", **spec: object) -> dict[str, object]:
    return {
        "metadata": {"resourceVersion": version},
        "spec": {"holderIdentity": holder, "leaseTransitions": 2, **spec},
    }


def test_a_lease_nobody_holds_or_we_hold_may_be_taken_at_once() -> None:
    for holder in (None, "", "me"):
        seen = Observed()
        seen.see(lease(holder), now=100.0)
        assert leadership.may_take(seen, "me", TIMING, now=100.0)


def test_anothers_lease_is_taken_only_after_it_stood_unchanged_for_a_lease_duration() -> None:
    seen = Observed()
    seen.see(lease("other", renewTime="t1"), now=100.0)
    assert not leadership.may_take(seen, "me", TIMING, now=114.9)
    # A renewal seen restarts the count, whatever the holder's clock says.
    seen.see(lease("other", version="8", renewTime="t2"), now=110.0)
    assert not leadership.may_take(seen, "me", TIMING, now=124.9)
    assert leadership.may_take(seen, "me", TIMING, now=125.0)
    # The same record read again (a new resourceVersion, nothing else) restarts nothing.
    seen.see(lease("other", version="9", renewTime="t2"), now=120.0)
    assert leadership.may_take(seen, "me", TIMING, now=125.0)
    assert seen.resource_version == "9"


def test_a_take_over_counts_a_transition_and_a_renewal_keeps_the_acquire_time() -> None:
    seen = Observed()
    seen.see(lease("other", acquireTime="old"), now=0.0)
    taken = leadership.record(seen, "me", TIMING, WALL)
    assert taken == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-01-02T03:04:05.678901Z",
        "renewTime": "2026-01-02T03:04:05.678901Z",
        "leaseTransitions": 3,
    }
    seen.see(lease("me", acquireTime="then"), now=1.0)
    renewed = leadership.record(seen, "me", TIMING, WALL)
    assert renewed["acquireTime"] == "then" and renewed["leaseTransitions"] == 2
    # A Lease made anew starts at 0 transitions.
    assert leadership.record(Observed(), "me", TIMING, WALL)["leaseTransitions"] == 0


def test_a_released_lease_has_no_holder_and_the_writes_are_conditional() -> None:
    seen = Observed()
    seen.see(lease("me"), now=0.0)
    spec = leadership.released(seen, WALL)
    assert spec["holderIdentity"] is None and spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 2
    patch = leadership.guarded_patch(spec, seen.resource_version)
    assert patch["metadata"] == {"resourceVersion": "7"}


@pytest.mark.parametrize(
    ("lease_s", "deadline", "retry", "words"),
    [
        (10, 10, 2, "longer than the renew deadline"),
        (15, 2, 2, "1.2 x the retry period"),
        (15, 10, 0, "above 0"),
    ],
)
def test_timings_client_go_refuses_are_refused(
    lease_s: float, deadline: float, retry: float, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        LeaseTiming(lease_s, deadline, retry)
