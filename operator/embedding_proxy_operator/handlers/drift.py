"""Drift put back: what the operator owns, changed or deleted by someone else, is written again
within moments, with a Warning Event naming who changed it.

kopf watches only the operator's ConfigMaps (a server-side label selector, set at start-up), so
the watch costs nothing for the cluster's other ConfigMaps. Its KEDA ScaledObjects (picked out
by label from the watch the caches keep anyway; none where KEDA is not installed, since kopf
watches only what the API server serves) wake the EmbeddingProxy's observe daemon, which writes
them. The admission webhook's configuration (Webhook mode) is watched by name. The sidecar
taken out of a Deployment is put back by `reconcile.target_changed`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from ..io import kube
from ..io.kube import ApiError
from ..logic import drift
from ..model import names
from . import admission
from .reconcile import reconcile
from .state import state_of

# The operator's ConfigMaps: the server sends only these (`lifecycle.configure`).
CONFIGMAP_SELECTOR = f"{names.LABEL_MANAGED_BY}={names.FIELD_MANAGER},{names.LABEL_PROXY}"
WEBHOOK_CONFIGURATIONS = ("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations")


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


@kopf.on.event(
    "keda.sh",
    "v1alpha1",
    "scaledobjects",
    labels={names.LABEL_MANAGED_BY: names.FIELD_MANAGER, names.LABEL_PROXY: kopf.PRESENT},
)
async def scaled_object_changed(
    type: str | None, body: Mapping[str, Any], namespace: str, memo: kopf.Memo, **_: Any
) -> None:
    """Ours deleted, or its spec changed by another field manager: the EmbeddingProxy's daemon
    polls now and puts it back (KEDA's own status updates wake nothing)."""
    if type not in ("MODIFIED", "DELETED"):
        return
    if type == "MODIFIED" and not drift.edited_by_others(body, names.FIELD_MANAGER, "f:spec"):
        return
    proxy = ((body.get("metadata") or {}).get("labels") or {}).get(names.LABEL_PROXY, "")
    if proxy:
        # A deletion that goes with its EmbeddingProxy or its switch to another provider finds
        # nothing to put back: the daemon writes what the spec says.
        state_of(memo).wakeup(namespace, proxy).set()


def watch_configuration(settings: kopf.OperatorSettings, name: str) -> None:
    """Webhook mode: watch the configuration the operator fills in, by name (the server sends
    that one only; RBAC grants list and watch on that name alone)."""
    group, version, plural = WEBHOOK_CONFIGURATIONS
    settings.watching.field_selectors[group, version, plural] = f"metadata.name={name}"
    kopf.on.event(group, version, plural)(configuration_changed)


async def configuration_changed(
    type: str | None, body: Mapping[str, Any], memo: kopf.Memo, logger: logging.Logger, **_: Any
) -> None:
    state = state_of(memo)
    if state.webhook_bundle is None:
        return  # not published yet: the start-up writes it
    name = (body.get("metadata") or {}).get("name")
    if type == "DELETED":
        # Not made again: it is the chart's, and `helm uninstall` deletes it first, while the
        # operator still runs; one made again would outlive the release.
        state.webhook_published = False
        message = (
            f"MutatingWebhookConfiguration {name!r} was deleted: no new pod gets the sidecar "
            "from the webhook until it exists again (helm upgrade makes it); it is filled in then"
        )
        logger.warning(message)
        kopf.event(
            dict(body), type="Warning", reason="WebhookConfigurationDeleted", message=message
        )
        return
    if drift.configuration_patch(body, admission.configuration_hooks(state, body)) is None:
        return  # as written (the operator's own write, or defaults the API server added)
    try:
        before = await kube.retrying(
            functools.partial(admission.write_configuration, state),
            what=f"putting MutatingWebhookConfiguration {name} back",
            logger=logger,
            max_delay=state.options.max_retry_seconds,
        )
    except ApiError as e:
        logger.warning("putting MutatingWebhookConfiguration %s back: %s", name, e)
        return
    state.webhook_published = True
    if before is None:
        return
    if type == "ADDED":
        what = "was created anew: filled in"
    else:
        who = drift.changed_by(before, names.FIELD_MANAGER, "f:webhooks")
        what = f"was changed by {who}: put back"
    message = f"MutatingWebhookConfiguration {name!r} {what}"
    logger.warning(message)
    kopf.event(dict(before), type="Warning", reason="WebhookConfigurationRepaired", message=message)
