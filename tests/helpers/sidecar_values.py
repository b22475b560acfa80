"""Sidecar values that pod validation (or the kubelet) would refuse, and values it takes: the
operator's own check (tests/unit) and the CRD's rules on a real API server (tests/chart) run the
same table, with the same messages, so they cannot drift apart."""

from __future__ import annotations

from typing import Any

from embedding_proxy_operator.model.sidecar_rules import (
    IMAGE_MESSAGE,
    QUANTITY_MESSAGE,
    REQUEST_OVER_LIMIT_MESSAGE,
    RESOURCE_NAMES_MESSAGE,
)


def resources(requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None) -> dict:
    out: dict[str, Any] = {}
    if requests is not None:
        out["requests"] = requests
    if limits is not None:
        out["limits"] = limits
    return {"resources": out}


DIGEST = "sha256:" + "0" * 64

# (spec.sidecar, the message both sides give)
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"image": "embedding-proxy:0.1.0 "}, IMAGE_MESSAGE),
    ({"image": " embedding-proxy:0.1.0"}, IMAGE_MESSAGE),
    ({"image": "embedding-proxy:0.1.0\n"}, IMAGE_MESSAGE),
    ({"image": "Embedding-Proxy:0.1.0"}, IMAGE_MESSAGE),
    ({"image": "registry.example.com/ml/embedding-proxy:"}, IMAGE_MESSAGE),
    ({"image": "embedding-proxy@sha256:abc"}, IMAGE_MESSAGE),
    ({"image": "registry.example.com//embedding-proxy"}, IMAGE_MESSAGE),
    ({"image": "https://registry.example.com/embedding-proxy"}, IMAGE_MESSAGE),
    (resources({"cpu": "2"}, {"cpu": "1"}), REQUEST_OVER_LIMIT_MESSAGE),
    (resources({"cpu": 2}, {"cpu": 1}), REQUEST_OVER_LIMIT_MESSAGE),
    (resources({"cpu": "1001m"}, {"cpu": "1"}), REQUEST_OVER_LIMIT_MESSAGE),
    (resources({"memory": "1025Mi"}, {"memory": "1Gi"}), REQUEST_OVER_LIMIT_MESSAGE),
    (
        resources({"ephemeral-storage": "2e9"}, {"ephemeral-storage": "1G"}),
        REQUEST_OVER_LIMIT_MESSAGE,
    ),
    (resources({"cpus": "1"}), RESOURCE_NAMES_MESSAGE),
    (resources(limits={"nvidia.com/gpu": 1}), RESOURCE_NAMES_MESSAGE),
    (resources({"cpu": "-1"}), QUANTITY_MESSAGE),
    (resources(limits={"memory": -5}), QUANTITY_MESSAGE),
    (resources({"cpu": "1e1.5"}), QUANTITY_MESSAGE),
]

ACCEPTED: list[dict[str, Any]] = [
    {"image": "embedding-proxy:0.1.0"},
    {"image": "ghcr.io/acme/embedding-proxy:0.1.0"},
    {"image": f"localhost:5000/embedding-proxy@{DIGEST}"},
    {"image": f"registry.example.com:443/ml/embedding_proxy:v1.2-rc.1@{DIGEST}"},
    {"image": "[fd00::1]:5000/embedding-proxy"},
    resources({"cpu": "1"}, {"cpu": "1000m"}),
    resources({"memory": "1Gi"}, {"memory": "1073741824"}),
    resources({"cpu": "1e-3"}, {"cpu": "1m"}),
    resources({"cpu": "0"}, {"cpu": ".5"}),
    resources({"cpu": 4}),
    resources(limits={"cpu": "250m", "ephemeral-storage": "1Gi"}),
    # At the bounds the CEL rules' cost is estimated for: the longest image, every name, the
    # longest quantities.
    {
        "image": "a" * 1024,
        **resources(
            {n: "0" * 64 for n in ("cpu", "memory", "ephemeral-storage")},
            {n: "1" + "0" * 63 for n in ("cpu", "memory", "ephemeral-storage")},
        ),
    },
]
