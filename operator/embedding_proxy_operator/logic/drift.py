"""Drift: the patches that put back what the operator owns (its ConfigMaps, its KEDA
ScaledObjects, the admission webhook's configuration) as it wrote them, whether a write put back
what someone else changed, and who that was, from the object's managedFields (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import names
from .patches import covers

Obj = dict[str, Any]


def configmap_patch(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> Obj | None:
    """The merge patch that brings the ConfigMap `current` to `wanted`, keys added by hand taken
    out again (each would be a file beside the config in the sidecar); None when it is so."""
    meta = wanted["metadata"]
    data: Obj = dict(wanted["data"])
    data.update({key: None for key in current.get("data") or {} if key not in data})
    patch: Obj = {"data": data, "metadata": {"labels": meta["labels"]}}
    if current.get("binaryData"):
        patch["binaryData"] = None
    if covers(current, patch):
        return None
    if "ownerReferences" in meta:
        patch["metadata"]["ownerReferences"] = meta["ownerReferences"]
    return patch


def scaled_object_patch(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> Obj | None:
    """The merge patch that brings our ScaledObject `current` to `wanted`, top-level spec fields
    added by hand taken out again (`cooldownPeriod`, `idleReplicaCount` would change how it
    scales); None when it is so."""
    spec: Obj = dict(wanted["spec"])
    spec.update({key: None for key in current.get("spec") or {} if key not in spec})
    patch: Obj = {"metadata": {"labels": wanted["metadata"]["labels"]}, "spec": spec}
    if covers(current, patch):
        return None
    if "ownerReferences" in wanted["metadata"]:
        patch["metadata"]["ownerReferences"] = wanted["metadata"]["ownerReferences"]
    return patch


def configuration_patch(current: Mapping[str, Any], hooks: list[Obj]) -> Obj | None:
    """The merge patch that writes the webhooks `hooks` into the MutatingWebhookConfiguration
    `current` (its resourceVersion checked); None when it holds them already (the API server
    adds defaults, which are no reason to write)."""
    if covers(current, {"webhooks": hooks}):
        return None
    rv = (current.get("metadata") or {}).get("resourceVersion")
    return {"metadata": {"resourceVersion": rv}, "webhooks": hooks}


def edited_by_others(obj: Mapping[str, Any], own: str, field: str) -> bool:
    """Whether a field manager other than `own` holds any of `field` (such as "f:spec"): someone
    changed what the operator writes there since it last wrote it."""
    return any(
        isinstance(e, Mapping)
        and e.get("manager") not in (None, own)
        and field in (e.get("fieldsV1") or {})
        for e in (obj.get("metadata") or {}).get("managedFields") or []
    )


def drifted(
    proxy: Mapping[str, Any], change: str | None, before: Mapping[str, Any] | None, version: str
) -> str | None:
    """What happened to the ConfigMap, when the write `change` put back a config the operator
    had written already (status names its version); None when the write was news (a first
    config, a changed spec) or there was none."""
    if change not in ("created", "updated"):
        return None
    if (proxy.get("status") or {}).get("configVersion") != version:
        return None
    if before is None:
        return "was deleted"
    return f"was changed by {changed_by(before, names.FIELD_MANAGER)}"


def changed_by(obj: Mapping[str, Any], own: str, field: str = "f:data") -> str:
    """Who else holds `field` of `obj` (the fields the operator writes): "kubectl-edit (Update,
    2026-01-02T03:04:05Z)", newest first. A writer that changed them took them over from the
    operator's field manager (`own`), so it is named here; when none is, the others that hold
    anything, and when there are none either, that the writer used the operator's own name."""
    entries = [
        e
        for e in (obj.get("metadata") or {}).get("managedFields") or []
        if isinstance(e, Mapping) and e.get("manager") not in (None, own)
    ]
    holding = [e for e in entries if field in (e.get("fieldsV1") or {})] or entries
    if not holding:
        return f"a writer with the operator's own field manager ({own})"
    # RFC 3339 in UTC, one precision: the strings sort as the times do.
    holding.sort(key=lambda e: str(e.get("time") or ""), reverse=True)
    return ", ".join(_describe(e) for e in holding)


def _describe(entry: Mapping[str, Any]) -> str:
    how = ", ".join(str(entry[k]) for k in ("operation", "time") if entry.get(k))
    return f"{entry['manager']} ({how})" if how else str(entry["manager"])
