"""Pure: whether rolling out the target Deployment needs a GPU that may not exist.

A pod template that requests a GPU, rolled with maxSurge > 0 and maxUnavailable 0 (the default
25%/25% resolves to that for up to 3 replicas), starts each new pod before it stops an old one:
the new pod needs a spare GPU. Where every GPU is taken by the old pods, it stays Pending and the
rollout never ends. The operator's injection in Deployment mode is such a rollout, and in either
mode so is every change that needs a restart."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..model import names
from . import patches
from .conditions import Fact

# What the API server fills in for a RollingUpdate that leaves them out.
DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
FIX = (
    "set spec.strategy.rollingUpdate to maxSurge: 0 and maxUnavailable: 1, "
    "or spec.strategy.type to Recreate"
)


@dataclass(frozen=True)
class Fenceposts:
    """A RollingUpdate's bounds, in pods, as the Deployment controller resolves them."""

    max_surge: int
    max_unavailable: int
    replicas: int


def gpu_request(deployment: Mapping[str, Any]) -> str | None:
    """The GPU resource the first container (init containers too) requests or limits that asks
    for one: any extended resource `<vendor>/gpu` (nvidia.com/gpu, amd.com/gpu, ...) above 0."""
    pod = patches.pod_spec(deployment)
    for field in ("initContainers", "containers"):
        for c in pod.get(field) or []:
            resources = c.get("resources") or {}
            for kind in ("limits", "requests"):
                for resource, amount in (resources.get(kind) or {}).items():
                    if str(resource).endswith("/gpu") and _positive(amount):
                        return str(resource)
    return None


def _positive(amount: Any) -> bool:
    try:
        return float(str(amount)) > 0
    except ValueError:
        return True  # a quantity with a suffix ("1k"): the API server took it as a count


def _scaled(value: Any, total: int, round_up: bool) -> int | None:
    """intstr.GetScaledValueFromIntOrPercent: an int as is, "N%" of total rounded as asked."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)
    if not text.endswith("%") or not text[:-1].isdigit():
        return None
    percent = int(text[:-1])
    return -(-percent * total // 100) if round_up else percent * total // 100


def fenceposts(deployment: Mapping[str, Any]) -> Fenceposts | None:
    """The RollingUpdate bounds (None for Recreate, or a value the API server would refuse)."""
    spec = deployment.get("spec") or {}
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return None
    rolling = strategy.get("rollingUpdate") or {}
    replicas = spec.get("replicas")
    replicas = replicas if isinstance(replicas, int) else 1
    surge = _scaled(rolling.get("maxSurge", DEFAULT_MAX_SURGE), replicas, round_up=True)
    unavailable = _scaled(
        rolling.get("maxUnavailable", DEFAULT_MAX_UNAVAILABLE), replicas, round_up=False
    )
    if surge is None or unavailable is None:
        return None
    if surge == 0 and unavailable == 0:
        unavailable = 1  # the controller's own way out (deploymentutil.ResolveFenceposts)
    return Fenceposts(surge, unavailable, replicas)


def surge_fact(deployment: Mapping[str, Any], target: str) -> Fact:
    """RolloutNeedsSpareGPU: True, naming the fix, when a rollout needs a spare GPU."""
    kind = names.ROLLOUT_NEEDS_SPARE_GPU
    gpu = gpu_request(deployment)
    if gpu is None:
        return Fact(kind, "False", "NoGPU", f"Deployment {target!r} requests no GPU")
    posts = fenceposts(deployment)
    if posts is None:
        strategy = ((deployment.get("spec") or {}).get("strategy") or {}).get("type", "?")
        msg = f"Deployment {target!r} rolls out with strategy {strategy}: no spare GPU needed"
        return Fact(kind, "False", "RolloutFits", msg)
    bounds = (
        f"maxSurge {posts.max_surge} and maxUnavailable {posts.max_unavailable} "
        f"(replicas: {posts.replicas})"
    )
    if posts.max_surge == 0 or posts.max_unavailable > 0:
        msg = (
            f"Deployment {target!r} requests {gpu} and rolls out with {bounds}: "
            "an old pod may stop before its replacement starts, so no spare GPU is needed"
        )
        return Fact(kind, "False", "RolloutFits", msg)
    # Under an Event's length limit (handlers.state.MAX_EVENT_MESSAGE) for a usual name.
    msg = (
        f"Deployment {target!r} requests {gpu} and rolls out with {bounds}: each "
        "rollout (the operator's included) needs a spare GPU, or its new pod stays Pending for "
        f"good. To roll in place, {FIX}"
    )
    return Fact(kind, "True", "SurgeNeedsSpareGPU", msg)
