"""The proxy's worker processes from its container's CPU limit: what `server.workers: auto` would
find in the container, decided here so that the config (and `kubectl get`) shows the number."""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction

from ..model import quantity
from ..model.quantity import Quantity


def cores(amount: Quantity) -> Fraction | None:
    """A Kubernetes CPU quantity ("2", "1500m", 0.5) in cores; None if it is not one."""
    return quantity.parse(str(amount).strip())


def workers(explicit: int | None, resources: Mapping[str, Mapping[str, Quantity]]) -> int | str:
    """`sidecar.workers` when set; else the CPU limit rounded up, at least 1; no limit: auto."""
    if explicit is not None:
        return explicit
    limit = resources.get("limits", {}).get("cpu")
    amount = cores(limit) if limit is not None else None
    if amount is None or amount <= 0:
        return "auto"
    return max(1, min(1024, math.ceil(amount)))
