"""Status conditions in the Kubernetes convention (type, status, reason, message,
lastTransitionTime, observedGeneration), and the `Ready` summary of the others."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..model import names

Status = Literal["True", "False", "Unknown"]
Condition = dict[str, Any]

# Ready is True only when all of these are; otherwise it names the first one that is not.
READY_MESSAGE = "every ready pod runs the sidecar on the current config"
READY_NEEDS = (names.TARGET_FOUND, names.SIDECAR_INJECTED, names.CONFIG_APPLIED)


@dataclass(frozen=True)
class Fact:
    """One observation, before it becomes a condition."""

    type: str
    status: Status
    reason: str
    message: str


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(
    current: Sequence[Condition],
    facts: Sequence[Fact],
    generation: int | None,
    timestamp: str,
) -> list[Condition]:
    """Current conditions with these facts applied; a condition keeps its lastTransitionTime
    unless its status changes, so that the time says since when it has been so."""
    out = {c.get("type"): dict(c) for c in current if c.get("type")}
    for fact in facts:
        out[fact.type] = _condition(out.get(fact.type), fact, generation, timestamp)
    ready = summarize(list(out.values()))
    out[names.READY] = _condition(out.get(names.READY), ready, generation, timestamp)
    # Ready first, then the others in a stable order, so that equal states compare equal.
    others = sorted((c for t, c in out.items() if t != names.READY), key=lambda c: c["type"])
    return [out[names.READY], *others]


def _condition(
    old: Condition | None, fact: Fact, generation: int | None, timestamp: str
) -> Condition:
    changed = old is None or old.get("status") != fact.status
    since = timestamp if changed or old is None else old.get("lastTransitionTime", timestamp)
    cond: Condition = {
        "type": fact.type,
        "status": fact.status,
        "reason": fact.reason,
        "message": fact.message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def summarize(conditions: Sequence[Condition]) -> Fact:
    by_type = {c.get("type"): c for c in conditions}
    # A known failure (an invalid spec, say) says more than a condition not yet known.
    for t in READY_NEEDS:
        c = by_type.get(t)
        if c is not None and c.get("status") != "True":
            return Fact(names.READY, "False", c.get("reason", t), c.get("message", ""))
    for t in READY_NEEDS:
        if t not in by_type:
            return Fact(names.READY, "Unknown", "Pending", f"{t} is not known yet")
    return Fact(names.READY, "True", "Ready", READY_MESSAGE)


def find(conditions: Sequence[Condition], type_: str) -> Condition | None:
    for c in conditions:
        if c.get("type") == type_:
            return c
    return None


def without_times(conditions: Sequence[Condition]) -> list[Condition]:
    """For comparing states: two condition lists that differ only in timestamps are equal."""
    return [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions]


def status_update(
    current: Mapping[str, Any],
    facts: Sequence[Fact],
    fields: Mapping[str, Any],
    generation: int | None,
    timestamp: str,
) -> dict[str, Any] | None:
    """The status to write: `current` with the facts merged into its conditions and `fields`
    over it; None when nothing would change. A None among `fields` (at any depth) removes that
    field, as in a merge patch."""
    conditions = merge(current.get("conditions") or [], facts, generation, timestamp)
    wanted = {**current, **fields, "conditions": conditions}
    if generation is not None:
        wanted["observedGeneration"] = generation
    same = _without_nulls({k: v for k, v in wanted.items() if k != "conditions"}) == {
        k: v for k, v in current.items() if k != "conditions"
    } and without_times(conditions) == without_times(current.get("conditions") or [])
    return None if same else wanted


def _without_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value
