"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's `leaderelection` (and so
controller-runtime) does it: pure decisions, the API calls are `io.leader`'s.

- A candidate takes the Lease when nobody holds it, or when the record it saw has not changed for
  `lease_seconds` by its own clock (never by comparing its clock with the holder's renewTime:
  clocks of two machines differ, their rates hardly).
- The holder renews every `retry_seconds`; when it has not renewed for `renew_deadline_seconds`
  it must stop acting at once. Between the two deadlines lies the margin
  (`lease_seconds - renew_deadline_seconds`) within which a write it sent still lands before
  anyone else may take over.
- Every write carries the resourceVersion read, so two candidates never both win one round.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..model.settings import LeaseTiming as Timing

Obj = dict[str, Any]


@dataclass
class Observed:
    """The last Lease record a candidate saw, and when (its own monotonic clock) it changed."""

    spec: Obj | None = None
    resource_version: str | None = None
    changed_at: float = 0.0

    def see(self, lease: Mapping[str, Any] | None, now: float) -> None:
        spec = dict((lease or {}).get("spec") or {}) if lease is not None else None
        if spec != self.spec:
            self.spec, self.changed_at = spec, now
        self.resource_version = ((lease or {}).get("metadata") or {}).get("resourceVersion")

    @property
    def holder(self) -> str:
        return str((self.spec or {}).get("holderIdentity") or "")


def may_take(observed: Observed, identity: str, timing: Timing, now: float) -> bool:
    """Whether `identity` may write itself into the Lease now: it holds it already, nobody does,
    or the record has stood unchanged for a whole lease duration."""
    holder = observed.holder
    if not holder or holder == identity:
        return True
    return now - observed.changed_at >= timing.lease_seconds


def micro_time(when: datetime.datetime) -> str:
    """A MicroTime as the API server writes it."""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(observed: Observed, identity: str, timing: Timing, wall: datetime.datetime) -> Obj:
    """The Lease's spec with `identity` holding it from `wall`: a renewal keeps acquireTime and
    the transition count, a take-over counts one more transition."""
    old = observed.spec or {}
    now = micro_time(wall)
    renewing = observed.holder == identity
    transitions = int(old.get("leaseTransitions") or 0)
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": max(1, round(timing.lease_seconds)),
        "acquireTime": (old.get("acquireTime") or now) if renewing else now,
        "renewTime": now,
        "leaseTransitions": transitions if renewing or not old else transitions + 1,
    }


def released(observed: Observed, wall: datetime.datetime) -> Obj:
    """The spec a holder leaves behind when it stops on purpose (client-go's ReleaseOnCancel):
    no holder, so that a standby takes over at its next attempt instead of waiting out the
    lease."""
    now = micro_time(wall)
    return {
        "holderIdentity": None,
        "leaseDurationSeconds": 1,
        "acquireTime": now,
        "renewTime": now,
        "leaseTransitions": int((observed.spec or {}).get("leaseTransitions") or 0),
    }


def lease(name: str, namespace: str, spec: Obj, labels: Mapping[str, str]) -> Obj:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": spec,
    }


def guarded_patch(spec: Obj, resource_version: str | None) -> Obj:
    """A merge patch that the API server applies only to the version read (409 otherwise)."""
    return {"metadata": {"resourceVersion": resource_version}, "spec": spec}
