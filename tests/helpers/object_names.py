"""Object-name fields and what both sides say of them: a name is pasted into API paths, so the CRD
(tests/chart, on a real API server) and the operator (tests/unit) refuse the same table."""

from __future__ import annotations

from typing import Any


def at(field: str, value: str) -> dict[str, Any]:
    """A spec fragment (with targetRef) that sets the dotted `field` to `value`."""
    spec: dict[str, Any] = {"targetRef": {"name": "tei"}}
    *parents, leaf = field.split(".")
    node = spec
    for part in parents:
        node = node.setdefault(part, {})
    if leaf == "key":
        node.setdefault("name", "keys")
    node[leaf] = value
    return spec


NAME_FIELDS = [
    "targetRef.name",
    "autoscaling.scaleTargetRef.name",
    "auth.apiKeysSecretRef.name",
    "auth.upstreamApiKeySecretRef.name",
]
KEY_FIELDS = ["auth.apiKeysSecretRef.key", "auth.upstreamApiKeySecretRef.key"]

# What an outside test sent (the first made the operator patch coredns in kube-system).
BAD_NAMES = [
    "../../kube-system/deployments/coredns",
    "../../etc",
    "..",
    ".",
    "a/b",
    "%2e%2e",
    "Tei",
    "-tei",
    "tei-",
    "tei..v2",
    "a b",
    "t" * 254,
]
GOOD_NAMES = ["tei", "tei-2", "tei.v2", "0", "t" * 253]
BAD_KEYS = ["../../etc/passwd", "a/b", "a b", "k" * 254]
GOOD_KEYS = ["api-keys", "API_KEYS.txt", "k" * 253]

REFUSED = [(f, v) for f in NAME_FIELDS for v in BAD_NAMES] + [
    (f, v) for f in KEY_FIELDS for v in BAD_KEYS
]
ACCEPTED = [(f, v) for f in NAME_FIELDS for v in GOOD_NAMES] + [
    (f, v) for f in KEY_FIELDS for v in GOOD_KEYS
]
