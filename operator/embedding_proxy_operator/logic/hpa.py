"""The built-in autoscaler's arithmetic: Kubernetes HPA's algorithm, applied to the proxies' queue
depth (`embedding_proxy_queue_depth_avg`).

Pure: no I/O and no clock. Each poll the operator passes what it measured, the policy from the
CR, the history it kept from the previous poll and the time; it gets back the replicas to set,
a reason in words, and the history to keep for the next poll.

The steps are HPA's, in HPA's order:

1. A target at 0 replicas is left alone (HPA: "scaling is disabled since the replica count of the
   target is zero"); one above maxReplicas or below minReplicas is brought inside at once.
2. Proposal (HPA's Pods metric with an AverageValue target): usage ratio = mean per-pod value /
   target; within the tolerance keep the current count, else `ceil(ratio x pods measured)`. Pods
   without a value count as at the target on a scale-down and as 0 on a scale-up, then the ratio
   is recomputed and the change dropped if that lands within tolerance or reverses its direction.
   When the proxies run elsewhere than in the scaled pods (beside clients), the proposal is HPA's
   External metric with an AverageValue target instead: `ceil(sum of values / target)`.
3. Stabilization: the result is kept between the lowest proposal of the scale-up window and the
   highest of the scale-down window (proposals are recorded unstabilized, every poll).
4. Rate limits: each policy allows `Pods` replicas or `Percent` % more (fewer) than the count at
   the start of its period; selectPolicy Max takes the policy allowing the largest change, Min the
   smallest, Disabled forbids that direction. Then min/max replicas.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from .hpa_policy import Policy, ScalingRules


@dataclass(frozen=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class ScaleEvent:
    at: float
    replicas: int  # how many were added (scale-up) or removed (scale-down), always > 0


@dataclass(frozen=True)
class History:
    """What HPA keeps in memory per autoscaler: recent unstabilized recommendations (for the
    stabilization windows) and recent scale events (for the rate policies)."""

    recommendations: tuple[Recommendation, ...] = ()
    scale_ups: tuple[ScaleEvent, ...] = ()
    scale_downs: tuple[ScaleEvent, ...] = ()

    def to_json(self) -> dict[str, list[dict[str, float | int]]]:
        def rows(items: Iterable[Recommendation | ScaleEvent]) -> list[dict[str, float | int]]:
            return [{"at": i.at, "replicas": i.replicas} for i in items]

        return {
            "recommendations": rows(self.recommendations),
            "scaleUps": rows(self.scale_ups),
            "scaleDowns": rows(self.scale_downs),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> History | None:
        """The history `to_json` wrote; None (start afresh, as HPA after a restart) for
        nothing or anything unreadable."""
        if not isinstance(data, Mapping):
            return None
        try:
            return cls(
                recommendations=tuple(
                    Recommendation(float(r["at"]), int(r["replicas"]))
                    for r in data.get("recommendations") or ()
                ),
                scale_ups=tuple(
                    ScaleEvent(float(e["at"]), int(e["replicas"]))
                    for e in data.get("scaleUps") or ()
                ),
                scale_downs=tuple(
                    ScaleEvent(float(e["at"]), int(e["replicas"]))
                    for e in data.get("scaleDowns") or ()
                ),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Decision:
    current_replicas: int
    desired_replicas: int
    # The proposal from the metric before stabilization and rate limits (None: none was made).
    recommendation: int | None
    # One line for Events and logs, and a CamelCase reason for conditions (HPA's where it has one).
    reason: str
    code: str
    # Keep `history` once the scale is set (or when nothing changes); keep
    # `history_if_not_applied` when setting it failed, so the failed change is not rate-counted.
    history: History
    history_if_not_applied: History
    observed_average: float | None = None  # mean queue depth over the pods that reported one
    observed_total: float = 0.0  # sum over the pods that reported one
    pods_measured: int = 0
    pods_missing: int = 0

    @property
    def scale(self) -> bool:
        return self.desired_replicas != self.current_replicas


def decide(
    current_replicas: int,
    samples: Mapping[str, float | None],
    policy: Policy,
    history: History | None,
    now: float,
) -> Decision:
    """The replicas to set now.

    `current_replicas`: the scale target's spec.replicas. `samples`: pod name -> that pod's
    `embedding_proxy_queue_depth_avg`, None for a pod that did not report one (not ready, scrape
    failed). With the proxies in the scaled pods, pass every non-terminating pod of the target;
    replicas the target should have but that are not listed yet count as missing too. `history`:
    the previous decision's history, None the first time. `now`: seconds on any clock that does
    not go back (wall-clock time if the history outlives the process).
    """
    if current_replicas < 0:
        raise ValueError("current replicas must not be negative")
    current = current_replicas
    values = [Fraction(v) for v in samples.values() if _usable(v)]
    missing = len(samples) - len(values)
    if policy.signal_in_scaled_pods:
        missing += max(0, current - len(samples))
    observed_total = float(sum(values, Fraction(0)))
    observed = {
        "observed_total": observed_total,
        "observed_average": observed_total / len(values) if values else None,
        "pods_measured": len(values),
        "pods_missing": missing,
    }

    if history is None:
        # HPA records the current count as a recommendation the first time it sees a target,
        # so that a fresh start (or a restart) never scales down before a full window.
        history = History(recommendations=(Recommendation(now, current),))

    def result(
        desired: int, recommendation: int | None, code: str, reason: str, kept: History
    ) -> Decision:
        kept = _prune(kept, policy, now)
        applied = _record_scale(kept, current, desired, policy, now)
        return Decision(
            current_replicas=current,
            desired_replicas=desired,
            recommendation=recommendation,
            reason=reason,
            code=code,
            history=applied,
            history_if_not_applied=kept,
            **observed,
        )

    if current == 0 and (policy.min_replicas != 0 or policy.signal_in_scaled_pods):
        reason = "the target has 0 replicas: autoscaling stands back until it is scaled up"
        return result(0, None, "ScalingDisabled", reason, history)
    if current > policy.max_replicas:
        reason = f"{current} replicas is above maxReplicas {policy.max_replicas}"
        return result(policy.max_replicas, None, "AboveMaxReplicas", reason, history)
    if current < policy.floor:
        reason = f"{current} replicas is below minReplicas {policy.floor}"
        return result(policy.floor, None, "BelowMinReplicas", reason, history)
    if not values:
        reason = "no proxy reported its queue depth: keeping the replicas as they are"
        return result(current, None, "NoMetrics", reason, history)

    target = policy.target_queue_depth_per_pod
    tolerance = Fraction(repr(float(policy.tolerance)))
    if policy.signal_in_scaled_pods:
        proposal, signal, held = _pods_proposal(current, values, missing, target, tolerance)
    else:
        proposal, signal, held = _external_proposal(current, values, target, tolerance)

    stabilized, window = _stabilize(current, proposal, history, policy, now)
    kept = replace(
        history, recommendations=(*history.recommendations, Recommendation(now, proposal))
    )
    desired, limit = _rate_limit(current, stabilized, history, policy, now)

    why: str | None = None
    if limit is not None:
        code, why = limit
    elif stabilized != proposal:
        code, why = window
    elif held is not None:
        code = held
    else:
        code = "DesiredWithinRange"
    action = f"scale {current} -> {desired}" if desired != current else f"stay at {current}"
    reason = f"{signal}: proposes {proposal}, but {why}; {action}" if why else f"{signal}; {action}"
    return result(desired, proposal, code, reason, kept)


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value >= 0


def _within(ratio: Fraction, tolerance: Fraction) -> bool:
    return abs(ratio - 1) <= tolerance


def _pods_proposal(
    current: int, values: list[Fraction], missing: int, target: int, tolerance: Fraction
) -> tuple[int, str, str | None]:
    """HPA's calculation for a Pods metric: (proposal, the signal in words, the reason code
    when it proposes no change). Exact rational arithmetic, so a ratio of exactly 1.1 is within
    a 10% tolerance and ceil(3 x 1.0) is 3."""
    measured = len(values)
    total = sum(values, Fraction(0))
    ratio = total / measured / target
    signal = (
        f"queue depth {float(total / measured):.1f} per pod over {measured} pod(s), "
        f"target {target} (ratio {float(ratio):.2f})"
    )
    if missing == 0:
        if _within(ratio, tolerance):
            return (
                current,
                f"{signal}, within the {float(tolerance):.0%} tolerance",
                "WithinTolerance",
            )
        return math.ceil(ratio * measured), signal, None

    # Pods without a value: assumed at the target on a scale-down and idle on a scale-up, the
    # assumptions that make the change smallest.
    signal += f", {missing} pod(s) without a value"
    count = measured + missing
    if ratio < 1:
        total += target * missing
    elif ratio == 1:
        count = measured
    new_ratio = total / count / target
    if _within(new_ratio, tolerance) or (ratio < 1 < new_ratio) or (new_ratio < 1 < ratio):
        return current, f"{signal} (counted conservatively: no change)", "MissingPods"
    proposal = math.ceil(new_ratio * count)
    if (new_ratio < 1 and proposal > current) or (new_ratio > 1 and proposal < current):
        return current, f"{signal} (counted conservatively: no change)", "MissingPods"
    return proposal, signal, None


def _external_proposal(
    current: int, values: list[Fraction], target: int, tolerance: Fraction
) -> tuple[int, str, str | None]:
    """HPA's calculation for an External metric with an AverageValue target: the sum of all
    proxies' queue depth is the load on the scaled Deployment."""
    total = sum(values, Fraction(0))
    signal = f"queue depth {float(total):.1f} in all over {len(values)} proxies"
    if current == 0:
        # HPA scales from zero on an External metric without looking at the tolerance.
        return math.ceil(total / target), f"{signal}, target {target} per replica", None
    ratio = total / (target * current)
    signal += f", target {target} per replica (ratio {float(ratio):.2f})"
    if _within(ratio, tolerance):
        return current, f"{signal}, within the {float(tolerance):.0%} tolerance", "WithinTolerance"
    return math.ceil(total / target), signal, None


def _stabilize(
    current: int, proposal: int, history: History, policy: Policy, now: float
) -> tuple[int, tuple[str, str]]:
    """Keep the count between the lowest recommendation of the scale-up window and the highest
    of the scale-down window (both including the new proposal)."""
    up_window = policy.scale_up.stabilization_window_seconds
    down_window = policy.scale_down.stabilization_window_seconds
    up = down = proposal
    for rec in history.recommendations:
        if rec.at > now - up_window:
            up = min(up, rec.replicas)
        if rec.at > now - down_window:
            down = max(down, rec.replicas)
    stabilized = min(max(current, up), down)
    if proposal >= current:
        why = ("ScaleUpStabilized", f"lowest recommendation of the last {up_window} s is {up}")
    else:
        why = (
            "ScaleDownStabilized",
            f"highest recommendation of the last {down_window} s is {down}",
        )
    return stabilized, why


def _changed_in(events: Iterable[ScaleEvent], period: int, now: float) -> int:
    return sum(e.replicas for e in events if e.at > now - period)


def _period_start(current: int, history: History, period: int, now: float) -> int:
    """The count at the start of a policy's period: changes made within it are undone."""
    return (
        current
        - _changed_in(history.scale_ups, period, now)
        + _changed_in(history.scale_downs, period, now)
    )


def _scale_up_limit(current: int, history: History, rules: ScalingRules, now: float) -> int:
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for p in rules.policies:
        start = _period_start(current, history, p.period_seconds, now)
        if p.type == "Pods":
            proposals.append(start + p.value)
        else:
            # Rounded up, so that a small Percent still allows one more replica.
            proposals.append(math.ceil(Fraction(start * (100 + p.value), 100)))
    return max(proposals) if rules.select_policy == "Max" else min(proposals)


def _scale_down_limit(current: int, history: History, rules: ScalingRules, now: float) -> int:
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for p in rules.policies:
        start = _period_start(current, history, p.period_seconds, now)
        if p.type == "Pods":
            proposals.append(start - p.value)
        else:
            proposals.append(math.trunc(Fraction(start * (100 - p.value), 100)))
    # Max selects the policy allowing the largest change: for a scale-down, the lowest count.
    return min(proposals) if rules.select_policy == "Max" else max(proposals)


def _rate_limit(
    current: int, desired: int, history: History, policy: Policy, now: float
) -> tuple[int, tuple[str, str] | None]:
    if desired > current:
        limit = max(_scale_up_limit(current, history, policy.scale_up, now), current)
        if policy.max_replicas > limit:
            ceiling = limit
            why = ("ScaleUpLimit", f"the scale-up policies allow {limit} now")
        else:
            ceiling = policy.max_replicas
            why = ("TooManyReplicas", f"maxReplicas is {policy.max_replicas}")
        if desired > ceiling:
            return ceiling, why
    elif desired < current:
        limit = min(_scale_down_limit(current, history, policy.scale_down, now), current)
        if policy.floor < limit:
            bottom = limit
            why = ("ScaleDownLimit", f"the scale-down policies allow {limit} now")
        else:
            bottom = policy.floor
            why = ("TooFewReplicas", f"minReplicas is {policy.floor}")
        if desired < bottom:
            return bottom, why
    return desired, None


def _record_scale(
    history: History, current: int, desired: int, policy: Policy, now: float
) -> History:
    if desired > current:
        history = replace(
            history, scale_ups=(*history.scale_ups, ScaleEvent(now, desired - current))
        )
    elif desired < current:
        history = replace(
            history, scale_downs=(*history.scale_downs, ScaleEvent(now, current - desired))
        )
    return _prune(history, policy, now)


def _prune(history: History, policy: Policy, now: float) -> History:
    """Drop what no window or period can count any more, so the history stays small."""
    keep = max(
        policy.scale_up.stabilization_window_seconds,
        policy.scale_down.stabilization_window_seconds,
    )
    up, down = policy.scale_up.longest_period, policy.scale_down.longest_period
    return History(
        recommendations=tuple(r for r in history.recommendations if r.at > now - keep),
        scale_ups=tuple(e for e in history.scale_ups if e.at > now - up),
        scale_downs=tuple(e for e in history.scale_downs if e.at > now - down),
    )
