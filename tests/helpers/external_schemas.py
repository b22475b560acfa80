"""Schemas of third-party custom resources our examples and operator write, which Kubernetes'
own schemas do not know: KEDA's ScaledObject (keda.sh/v1alpha1), the fields of its CRD that we
use, with the same types, enums and required fields."""

from __future__ import annotations

from typing import Any

_INT = {"type": "integer", "format": "int32"}
_HPA_POLICY = {
    "type": "object",
    "required": ["type", "value", "periodSeconds"],
    "properties": {
        "type": {"type": "string", "enum": ["Pods", "Percent"]},
        "value": _INT,
        "periodSeconds": _INT,
    },
}
_HPA_RULES = {
    "type": "object",
    "properties": {
        "stabilizationWindowSeconds": _INT,
        "selectPolicy": {"type": "string", "enum": ["Max", "Min", "Disabled"]},
        "policies": {"type": "array", "items": _HPA_POLICY},
    },
}

SCALED_OBJECT: dict[str, Any] = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": _INT,
                "cooldownPeriod": _INT,
                "initialCooldownPeriod": _INT,
                "idleReplicaCount": _INT,
                "minReplicaCount": _INT,
                "maxReplicaCount": _INT,
                "advanced": {
                    "type": "object",
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "behavior": {
                                    "type": "object",
                                    "properties": {"scaleUp": _HPA_RULES, "scaleDown": _HPA_RULES},
                                },
                            },
                        },
                    },
                },
                "triggers": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {
                                "type": "string",
                                "enum": ["AverageValue", "Value", "Utilization"],
                            },
                            "useCachedMetrics": {"type": "boolean"},
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "kind": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

EXTERNAL: dict[tuple[str, str], dict[str, Any]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
}
