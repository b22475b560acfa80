"""Pure parts of an autoscaling poll, around `hpa.decide`: which pods count, whether
another autoscaler already scales the target, and what to write and say afterwards (status,
the `Autoscaling` condition, Events). The handlers read, call these, and write."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..model import names
from ..model.spec import ProxySpec
from .conditions import Fact
from .hpa import Decision, History, Policy, Recommendation, ScaleEvent

Obj = dict[str, Any]


# ---- which pods count ------------------------------------------------------------------------


def samples(
    live_pods: Sequence[Mapping[str, Any]],
    readings: Mapping[str, float | None],
    signal_in_scaled_pods: bool,
) -> dict[str, float | None]:
    """`decide`'s samples. `readings`: queue depth by pod name for the ready pods running the
    sidecar (None where the scrape failed). With the proxies in the scaled pods every live pod
    counts, the unready ones without a value (HPA's conservative treatment then applies); with
    the proxies elsewhere only the proxies that report are the load."""
    if not signal_in_scaled_pods:
        return dict(readings)
    return {p["metadata"]["name"]: readings.get(p["metadata"]["name"]) for p in live_pods}


# ---- another autoscaler on the same target ---------------------------------------------------


@dataclass(frozen=True)
class Conflict:
    kind: str
    name: str

    def message(self, deployment: str) -> str:
        return (
            f"{self.kind} {self.name!r} already scales Deployment {deployment!r}: the operator "
            "stands back (delete it, or set spec.autoscaling.provider: None)"
        )


def _targets(obj: Mapping[str, Any], deployment: str) -> bool:
    ref = (obj.get("spec") or {}).get("scaleTargetRef") or {}
    # KEDA defaults kind to Deployment; an HPA always names it.
    return ref.get("name") == deployment and ref.get("kind", "Deployment") == "Deployment"


def _alive(obj: Mapping[str, Any]) -> bool:
    return not (obj.get("metadata") or {}).get("deletionTimestamp")


def _owned_by_scaled_object(obj: Mapping[str, Any], scaled_object: str) -> bool:
    return any(
        ref.get("kind") == "ScaledObject" and ref.get("name") == scaled_object
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


def conflicting_autoscaler(
    hpas: Iterable[Mapping[str, Any]],
    scaled_objects: Iterable[Mapping[str, Any]],
    deployment: str,
    ours: str,
    owner_uid: str | None,
) -> Conflict | None:
    """The first HPA or ScaledObject that scales `deployment` and is not ours. Ours: the
    ScaledObject named `ours` owned by the EmbeddingProxy with `owner_uid`, and the HPA KEDA made
    for it (owned by a ScaledObject named `ours`, even after that one is gone: KEDA and the
    garbage collector remove it moments later). A ScaledObject is named before its HPA, since
    that is the one to delete."""
    for so in scaled_objects:
        meta = so.get("metadata") or {}
        mine = meta.get("name") == ours and any(
            ref.get("uid") == owner_uid for ref in meta.get("ownerReferences") or []
        )
        if _alive(so) and _targets(so, deployment) and not mine:
            return Conflict("ScaledObject", str(meta.get("name", "")))
    for hpa in hpas:
        if _alive(hpa) and _targets(hpa, deployment) and not _owned_by_scaled_object(hpa, ours):
            return Conflict("HorizontalPodAutoscaler", str(hpa["metadata"].get("name", "")))
    return None


def refused_fact(facts: Sequence[Fact]) -> Fact:
    """The `Autoscaling` condition of an EmbeddingProxy whose plan refuses its target."""
    why = next((f for f in facts if f.type == names.SIDECAR_INJECTED and f.status == "False"), None)
    reason = why.reason if why else "Refused"
    return Fact(
        names.AUTOSCALING,
        "False",
        reason,
        f"the EmbeddingProxy is refused ({reason}): the operator scales nothing for it",
    )


def scaler_key(
    namespace: str, name: str, created: str, spec: ProxySpec
) -> dict[tuple[str, str], tuple[str, str]] | None:
    """An EmbeddingProxy that would scale a Deployment, keyed by it: (its creation time, its
    name), for `first_scaler`. None for one whose operator scales nothing."""
    auto = spec.autoscaling
    if not auto.enabled or auto.provider == "None":
        return None
    return {(namespace, spec.scale_target_name): (created, name)}


def first_scaler(scalers: Iterable[tuple[str, str]], name: str) -> Conflict | None:
    """Of the EmbeddingProxies that would scale one Deployment, the oldest (by creation time,
    then name) scales it; any other stands back, named as in conflict with it."""
    first = min(scalers, default=None)
    if first is None or first[1] == name:
        return None
    return Conflict("EmbeddingProxy", first[1])


# ---- history in status (integers only: the CRD has no floats) --------------------------------


def _rows(items: Iterable[Recommendation | ScaleEvent]) -> list[Obj]:
    return [{"atUnixMilliseconds": round(i.at * 1000), "replicas": i.replicas} for i in items]


def history_to_status(history: History) -> Obj:
    return {
        "recommendations": _rows(history.recommendations),
        "scaleUps": _rows(history.scale_ups),
        "scaleDowns": _rows(history.scale_downs),
    }


def history_from_status(data: Any) -> History | None:
    """The history `history_to_status` wrote; None (start afresh, as HPA after a restart) for
    nothing or anything unreadable."""
    if not isinstance(data, Mapping):
        return None

    def rows(key: str) -> list[tuple[float, int]]:
        out = []
        for row in data.get(key) or ():
            at, replicas = row["atUnixMilliseconds"], row["replicas"]
            if isinstance(at, bool) or isinstance(replicas, bool):
                raise TypeError(key)
            out.append((int(at) / 1000, int(replicas)))
        return out

    try:
        return History(
            recommendations=tuple(Recommendation(a, r) for a, r in rows("recommendations")),
            scale_ups=tuple(ScaleEvent(a, r) for a, r in rows("scaleUps")),
            scale_downs=tuple(ScaleEvent(a, r) for a, r in rows("scaleDowns")),
        )
    except (KeyError, TypeError, ValueError):
        return None


def timestamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- what to write and say -------------------------------------------------------------------


def decision_fact(decision: Decision, policy: Policy) -> Fact:
    """The `Autoscaling` condition after a decision: True while the autoscaler works (whatever
    it decided), False when it cannot."""
    rec, desired = decision.recommendation, decision.desired_replicas
    if decision.code == "NoMetrics":
        return Fact(names.AUTOSCALING, "False", "NoMetrics", decision.reason)
    if decision.code == "ScalingDisabled":
        return Fact(names.AUTOSCALING, "False", "ScaledToZero", decision.reason)
    if desired == policy.max_replicas and (rec is None or rec >= policy.max_replicas):
        return Fact(names.AUTOSCALING, "True", "AtMaximum", decision.reason)
    if desired == policy.floor and (rec is None or rec < policy.floor):
        return Fact(names.AUTOSCALING, "True", "AtMinimum", decision.reason)
    if decision.scale:
        return Fact(names.AUTOSCALING, "True", "Scaling", decision.reason)
    return Fact(names.AUTOSCALING, "True", "Stable", decision.reason)


def scale_event(decision: Decision, deployment: str) -> tuple[str, str] | None:
    """(reason, message) of the Event for a change of replicas; None when nothing changed."""
    if not decision.scale:
        return None
    current, desired = decision.current_replicas, decision.desired_replicas
    reason = "ScaledUp" if desired > current else "ScaledDown"
    return reason, f"scaled {deployment} from {current} to {desired}: {decision.reason}"


def decision_status(
    decision: Decision, deployment: str, history: History, last_scale_time: str | None
) -> Obj:
    """`status.autoscaling` after a decision; integers only."""
    out: Obj = {
        "scaleTargetName": deployment,
        "currentReplicas": decision.current_replicas,
        "desiredReplicas": decision.desired_replicas,
        "observedQueueDepth": round(decision.observed_total),
        "podsMeasured": decision.pods_measured,
        "history": history_to_status(history),
    }
    if last_scale_time:
        out["lastScaleTime"] = last_scale_time
    return out


def disabled_fact(enabled: bool, provider: str) -> Fact:
    if not enabled:
        message = "spec.autoscaling.enabled is false"
    else:
        message = "spec.autoscaling.provider is None: the operator scales nothing"
    return Fact(names.AUTOSCALING, "False", "Disabled", message)


def keda_fact(scaled_object: str, deployment: str, server: str) -> Fact:
    return Fact(
        names.AUTOSCALING,
        "True",
        "KEDA",
        f"ScaledObject {scaled_object!r} scales Deployment {deployment!r} on the proxies' "
        f"queue depth, read from Prometheus at {server}",
    )


def replacing(current: Mapping[str, Any] | None, wanted: Mapping[str, Any] | None) -> Obj | None:
    """A merge-patch value that turns `current` into `wanted`: keys no longer wanted are set to
    null (a merge patch otherwise keeps them). None when neither exists."""
    if wanted is None:
        return None
    out: Obj = {k: None for k in current or {} if k not in wanted}
    out.update(wanted)
    return out
