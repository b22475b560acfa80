"""The built-in autoscaler's policy: HPA's `behavior` and bounds as the algorithm (`hpa`) takes
them, built from the parsed `spec.autoscaling`, whose defaults (HPA's) are the only ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..model import spec

PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]

_POLICY_TYPES = ("Pods", "Percent")
_SELECT_POLICIES = ("Max", "Min", "Disabled")


@dataclass(frozen=True)
class RatePolicy:
    """At most `value` replicas (Pods) or `value` % (Percent) of change per `period_seconds`."""

    type: PolicyType
    value: int
    period_seconds: int

    def __post_init__(self) -> None:
        if self.type not in _POLICY_TYPES:
            raise ValueError(f"policy type must be Pods or Percent, got {self.type!r}")
        if self.value < 1:
            raise ValueError(f"policy value must be at least 1, got {self.value}")
        if self.period_seconds < 1:
            raise ValueError(f"policy periodSeconds must be at least 1, got {self.period_seconds}")


@dataclass(frozen=True)
class ScalingRules:
    """One direction of HPA's `behavior`: scaleUp or scaleDown."""

    stabilization_window_seconds: int
    select_policy: SelectPolicy = "Max"
    policies: tuple[RatePolicy, ...] = ()

    def __post_init__(self) -> None:
        if self.stabilization_window_seconds < 0:
            raise ValueError("stabilizationWindowSeconds must not be negative")
        if self.select_policy not in _SELECT_POLICIES:
            raise ValueError(
                f"selectPolicy must be Max, Min or Disabled, not {self.select_policy!r}"
            )
        # As HPA's validation: without a policy there is no rate to select.
        if not self.policies and self.select_policy != "Disabled":
            raise ValueError(
                "scaling rules need at least one policy unless selectPolicy is Disabled"
            )

    @property
    def longest_period(self) -> int:
        return max((p.period_seconds for p in self.policies), default=0)


def rules_of(rules: spec.ScalingRules, default: tuple[RatePolicy, ...] = ()) -> ScalingRules:
    """One direction of the parsed `behavior`; without policies it takes that direction's
    default ones (`default`), as HPA's defaulting does."""
    policies = tuple(RatePolicy(p.type, p.value, p.period_seconds) for p in rules.policies)
    return ScalingRules(
        stabilization_window_seconds=rules.stabilization_window_seconds,
        select_policy=rules.select_policy,
        policies=policies or default,
    )


# The spec's defaults (HPA's), the one place they are written: see `spec.Autoscaling`.
_DEFAULTS = spec.Autoscaling()
DEFAULT_SCALE_UP = rules_of(_DEFAULTS.behavior.scale_up)
DEFAULT_SCALE_DOWN = rules_of(_DEFAULTS.behavior.scale_down)


@dataclass(frozen=True)
class Policy:
    """`spec.autoscaling` as the algorithm needs it (see `policy_of`)."""

    min_replicas: int = _DEFAULTS.min_replicas
    max_replicas: int = _DEFAULTS.max_replicas
    target_queue_depth_per_pod: int = _DEFAULTS.target_queue_depth_per_pod
    tolerance: float = _DEFAULTS.tolerance_percent / 100
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN
    # True: the proxies run in the pods being scaled, one sample per pod (HPA's Pods metric).
    # False: they run elsewhere (beside clients), so their sum is the load on the scaled
    # Deployment and the target is per replica of it (HPA's External metric, AverageValue).
    signal_in_scaled_pods: bool = True

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError("autoscaling.minReplicas must not be negative")
        if self.max_replicas < 1:
            raise ValueError("autoscaling.maxReplicas must be at least 1")
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
        if self.target_queue_depth_per_pod < 1:
            raise ValueError("autoscaling.targetQueueDepthPerPod must be at least 1")
        if not 0 <= self.tolerance <= 1:
            raise ValueError("autoscaling tolerance must be between 0 and 1")

    @property
    def floor(self) -> int:
        """The fewest replicas the autoscaler itself sets. When the signal comes from the scaled
        pods, zero replicas would leave nothing to measure and no way back, so at least 1."""
        return max(self.min_replicas, 1) if self.signal_in_scaled_pods else self.min_replicas


# --- the parsed spec.autoscaling -> Policy ------------------------------------------------------


def policy_of(proxy: spec.ProxySpec) -> Policy:
    """The algorithm's policy from the parsed spec, which already applied the CRD's rules and
    defaults. When `scaleTargetRef` names another Deployment than `targetRef` (the one running
    the proxies), the proxies' sum is the signal (see `Policy`)."""
    auto = proxy.autoscaling
    ref = auto.scale_target_ref
    return Policy(
        min_replicas=auto.min_replicas,
        max_replicas=auto.max_replicas,
        target_queue_depth_per_pod=auto.target_queue_depth_per_pod,
        tolerance=auto.tolerance_percent / 100,
        scale_up=rules_of(auto.behavior.scale_up, DEFAULT_SCALE_UP.policies),
        scale_down=rules_of(auto.behavior.scale_down, DEFAULT_SCALE_DOWN.policies),
        signal_in_scaled_pods=ref is None or ref.name == proxy.target_ref.name,
    )
