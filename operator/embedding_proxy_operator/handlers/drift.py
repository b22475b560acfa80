"""Drift put back: what the operator owns, changed or deleted by someone else, is written again
within moments, with a Warning Event naming who changed it.

kopf watches only the operator's ConfigMaps (a server-side label selector, set at start-up), so
the watch costs nothing for the cluster's other ConfigMaps. The sidecar taken out of a
Deployment is put back by `reconcile.target_changed`; the KEDA ScaledObject by the observe
daemon's next poll.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from ..io import kube
from ..io.kube import ApiError
from ..model import names
from .reconcile import reconcile
from .state import state_of

# The operator's ConfigMaps: the server sends only these (`lifecycle.configure`).
CONFIGMAP_SELECTOR = f"{names.LABEL_MANAGED_BY}={names.FIELD_MANAGER},{names.LABEL_PROXY}"


@kopf.on.event(
    "",
    "v1",
    "configmaps",
    labels={names.LABEL_MANAGED_BY: names.FIELD_MANAGER, names.LABEL_PROXY: kopf.PRESENT},
)
async def configmap_changed(
    type: str | None,
    body: Mapping[str, Any],
    namespace: str,
    memo: kopf.Memo,
    logger: logging.Logger,
    **_: Any,
) -> None:
    if type not in ("MODIFIED", "DELETED"):
        return  # listed at start (every EmbeddingProxy is reconciled then), or made by us
    meta = body.get("metadata") or {}
    proxy = (meta.get("labels") or {}).get(names.LABEL_PROXY, "")
    if not proxy:
        return  # a label of ours with no EmbeddingProxy named: nothing to put back from
    # Reconciled at every change, the operator's own writes too (it then finds nothing to
    # write); a write that puts back a config already written is drift, and said so
    # (`reconcile`), whichever event led to it.
    state = state_of(memo)
    try:
        await kube.retrying(
            functools.partial(reconcile, state, namespace, proxy, logger),
            what=f"putting ConfigMap {namespace}/{meta.get('name')} back",
            logger=logger,
            max_delay=state.options.max_retry_seconds,
        )
    except ApiError as e:
        state.metrics.failed(namespace, proxy)
        logger.warning("putting ConfigMap %s/%s back: %s", namespace, meta.get("name"), e)
