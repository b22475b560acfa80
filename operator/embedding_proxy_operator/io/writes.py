"""The operator's API writes that read first and write only what changed: the ConfigMap, the
EmbeddingProxy's status, our ScaledObject. What to write comes from the pure modules."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..logic import drift, keda
from ..logic.conditions import Fact, now, status_update
from . import kube
from .kube import ApiError, Kube

Obj = dict[str, Any]


CONFLICT = "conflict"


async def write_configmap(api: Kube, wanted: Obj, uid: str | None) -> tuple[str | None, Obj | None]:
    """Create or update the ConfigMap: ('created' or 'updated', or None when it was already so;
    the ConfigMap as it was, None when there was none). CONFLICT (nothing written) when a
    ConfigMap of that name exists that this EmbeddingProxy (`uid`) does not own: it is someone
    else's, never taken over."""
    meta = wanted["metadata"]
    path = kube.configmap_path(meta["namespace"], meta["name"])
    current = await api.get(path)
    if current is None:
        try:
            await api.request("POST", kube.configmap_path(meta["namespace"]), wanted)
            return "created", None
        except ApiError as e:
            if e.status != 409:
                raise
            current = await api.get(path) or {}
    if not keda.owned_by(current, uid):
        return CONFLICT, current
    patch = drift.configmap_patch(current, wanted)
    if patch is None:
        return None, current
    await api.request("PATCH", path, patch, kube.MERGE_PATCH)
    return "updated", current


async def delete_configmap(api: Kube, namespace: str, name: str, uid: str | None) -> None:
    """Delete the ConfigMap if this EmbeddingProxy owns it; never someone else's."""
    path = kube.configmap_path(namespace, name)
    current = await api.get(path)
    if current is None or not keda.owned_by(current, uid):
        return
    # The precondition: the very object read, not one that replaced it since.
    options = {"preconditions": {"uid": current["metadata"]["uid"]}}
    try:
        await api.request("DELETE", path, options)
    except ApiError as e:
        if e.status not in (404, 409):
            raise


def changes(proxy: Mapping[str, Any], facts: Sequence[Fact], fields: Mapping[str, Any]) -> bool:
    """Whether `write_status` would write anything for this EmbeddingProxy as it is."""
    meta = proxy["metadata"]
    current = dict(proxy.get("status") or {})
    return status_update(current, facts, fields, meta.get("generation"), now()) is not None


async def write_status(
    api: Kube, proxy: Mapping[str, Any], facts: Sequence[Fact], fields: Mapping[str, Any]
) -> None:
    """Merge facts into the conditions and write status, only when something changed."""
    meta = proxy["metadata"]
    current = dict(proxy.get("status") or {})
    wanted = status_update(current, facts, fields, meta.get("generation"), now())
    if wanted is None:
        return
    await api.request(
        "PATCH",
        kube.proxy_path(meta["namespace"], meta["name"]) + "/status",
        {"status": wanted},
        kube.MERGE_PATCH,
    )


async def remove_scaled_object(
    api: Kube, namespace: str, ours: str, uid: str | None, logger: logging.Logger
) -> None:
    """Delete our ScaledObject if there is one (KEDA then removes its HPA); never someone
    else's of the same name."""
    path = kube.scaledobject_path(namespace, ours)
    current = await api.get(path)
    if current is not None and keda.owned_by(current, uid):
        await api.delete(path)
        logger.info("deleted ScaledObject %s/%s", namespace, ours)
