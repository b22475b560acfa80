"""The operator's API writes that read first and write only what changed: the ConfigMap, the
EmbeddingProxy's status, our ScaledObject. What to write comes from the pure modules."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from . import keda, kube, patches
from .conditions import Fact, now, status_update
from .kube import ApiError, Kube

Obj = dict[str, Any]


async def write_configmap(api: Kube, wanted: Obj) -> str | None:
    """Create or update the ConfigMap; 'created', 'updated' or None when it was already so."""
    meta = wanted["metadata"]
    path = kube.configmap_path(meta["namespace"], meta["name"])
    current = await api.get(path)
    if current is None:
        try:
            await api.request("POST", kube.configmap_path(meta["namespace"]), wanted)
            return "created"
        except ApiError as e:
            if e.status != 409:
                raise
            current = await api.get(path) or {}
    patch = patches.configmap_patch(current, wanted)
    if patch is None:
        return None
    await api.request("PATCH", path, patch, kube.MERGE_PATCH)
    return "updated"


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
