"""The proxy's worker processes from its container's CPU limit: what `server.workers: auto` would
find in the container, decided here so that the config (and `kubectl get`) shows the number."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from .spec import Quantity

_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)")


def cores(quantity: Quantity) -> Decimal | None:
    """A Kubernetes CPU quantity ("2", "1500m", 0.5) in cores; None if it is not one."""
    match = _QUANTITY.fullmatch(str(quantity).strip())
    if match is None or match.group(2) not in _SUFFIX:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2)]
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        return None


def workers(explicit: int | None, resources: Mapping[str, Mapping[str, Quantity]]) -> int | str:
    """`sidecar.workers` when set; else the CPU limit rounded up, at least 1; no limit: auto."""
    if explicit is not None:
        return explicit
    limit = resources.get("limits", {}).get("cpu")
    amount = cores(limit) if limit is not None else None
    if amount is None or amount <= 0:
        return "auto"
    return max(1, min(1024, math.ceil(amount)))
