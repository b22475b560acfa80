"""What pod validation (and the kubelet) would refuse of the sidecar, refused in the spec instead.

Once such a value is in the target's pod template, its ReplicaSet cannot create a single pod (the
Deployment's ReplicaFailure condition) or its pods never start. The CRD's CEL rules say the same
with the same messages (a unit test compares them); they are repeated here for objects stored
before the CRD had them. The patterns read the same in Python and in RE2; the CRD quotes them as
CEL raw strings (r'...')."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from . import quantity

# An image reference as the container runtimes parse it (the distribution/reference grammar):
# [registry[:port]/]path[:tag][@digest], the path in lower case, nothing around it.
_PATH_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][-a-zA-Z0-9]*[a-zA-Z0-9])"
_HOST = f"(?:{_DOMAIN_COMPONENT}(?:[.]{_DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])"
_TAG = "[A-Za-z0-9_][-A-Za-z0-9_.]{0,127}"
_DIGEST = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_PATTERN = (
    f"^(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    f"(?::{_TAG})?(?:@{_DIGEST})?$"
)
IMAGE_MAX_LENGTH = 1024
IMAGE_MESSAGE = (
    "sidecar.image must be an image reference, [registry[:port]/]name[:tag][@digest], "
    "with a lower-case name and no spaces"
)

# What the proxy may ask for. Pod validation knows more names (hugepages-*, extended resources
# such as nvidia.com/gpu), each with rules of its own; the proxy needs none of them.
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")
RESOURCE_KINDS = ("requests", "limits")
RESOURCE_NAMES_MESSAGE = "sidecar.resources may name cpu, memory and ephemeral-storage only"
QUANTITY_MESSAGE = "sidecar.resources must be quantities of 0 or more, such as 500m or 1Gi"
REQUEST_OVER_LIMIT_MESSAGE = "sidecar.resources.requests must not exceed sidecar.resources.limits"
# The longest quantity string: bounds the cost of the CEL rules.
QUANTITY_MAX_LENGTH = 64


def image_problem(image: str) -> str | None:
    """Why the image is no reference a runtime would pull, in one line; None when it is one."""
    if len(image) <= IMAGE_MAX_LENGTH and re.fullmatch(IMAGE_PATTERN, image):
        return None
    return f"{IMAGE_MESSAGE}, got {image[:200]!r}"


def resources_problem(resources: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why pod validation would refuse these requests and limits, in one line; None if not."""
    for kind, amounts in resources.items():
        if kind not in RESOURCE_KINDS:
            return f"sidecar.resources holds requests and limits only, got {kind!r}"
        for name, value in amounts.items():
            if name not in RESOURCE_NAMES:
                return f"{RESOURCE_NAMES_MESSAGE}, got {kind}.{name}"
            amount = quantity.parse(value)
            if amount is None or amount < 0 or len(str(value)) > QUANTITY_MAX_LENGTH:
                return f"{QUANTITY_MESSAGE}, got {kind}.{name}: {str(value)[:80]!r}"
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for name, value in requests.items():
        request, limit = quantity.parse(value), quantity.parse(limits.get(name))
        if request is not None and limit is not None and request > limit:
            return (
                f"{REQUEST_OVER_LIMIT_MESSAGE}: requests.{name} is {value}, "
                f"limits.{name} {limits[name]}"
            )
    return None


def checked_image(image: str) -> str:
    """`image`, or a ValueError saying why it is none (pydantic's AfterValidator)."""
    if problem := image_problem(image):
        raise ValueError(problem)
    return image


def checked_resources(resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`resources`, or a ValueError saying why pod validation would refuse them."""
    if problem := resources_problem(resources):
        raise ValueError(problem)
    return resources
