"""Webhook mode: the admission webhook that puts the sidecar into each new pod of a target as
the API server creates it, the MutatingWebhookConfiguration it is reached by, and the probe
that tells the operator whether the API server reaches it.

The webhook never refuses a pod: whatever goes wrong (no EmbeddingProxy found, the API slow),
the pod is let through as it is, and the observe daemon finds and re-creates it
(`observe.recreate_escaped`)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import functools
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import jsonpatch
import kopf

from ..io import kube
from ..io.kube import ApiError
from ..io.webhook_server import WebhookServer
from ..logic import certs, drift, injection, pods
from ..logic.conditions import Fact
from ..model import names
from ..model.images import with_sidecar_image
from ..model.spec import SpecError, parse
from .state import State, state_of

Obj = dict[str, Any]
# The most the webhook spends finding a pod's EmbeddingProxy before it lets the pod through
# (the API server waits at most injection.TIMEOUT_SECONDS for the answer).
LOOKUP_SECONDS = 3.0
# Between attempts to write the configuration when it is missing or refused.
PUBLISH_RETRY_SECONDS = 10.0


def configuration_path(name: str) -> str:
    return (
        f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{kube.segment(name)}"
    )


async def no_server(fn: Any) -> AsyncIterator[dict[str, Any]]:
    """Without a webhook port there is no webhook (kopf wants a server for its handlers)."""
    await asyncio.Event().wait()
    yield {}


def server_for(state: State, own_namespace: str, logger: logging.Logger) -> Any:
    """The webhook server of the operator's settings; `no_server` when it has no port."""
    options = state.options
    if not options.webhook_port:
        logger.info("no admission webhook: EMBEDDING_PROXY_OPERATOR_WEBHOOK_PORT is not set")
        return no_server
    if options.webhook_url:
        hosts = [urlsplit(options.webhook_url).hostname or ""]
    else:
        hosts = certs.service_names(options.webhook_service)

    async def publish(bundle: bytes) -> None:
        await publish_configuration(state, bundle, own_namespace, logger)

    return WebhookServer(options.webhook_port, hosts, options.webhook_cert_seconds, publish)


async def publish_configuration(
    state: State, mine: bytes, own_namespace: str, logger: logging.Logger
) -> None:
    """Write the webhooks into the configuration (the chart creates it empty): this replica's
    CAs joined to the other replicas' still valid ones, since the Service may send a request to
    any of them. Returns once written."""
    state.webhook_bundle, state.webhook_namespace = mine, own_namespace
    while True:
        try:
            await kube.retrying(
                functools.partial(write_configuration, state),
                what=f"writing MutatingWebhookConfiguration {state.options.webhook_configuration}",
                logger=logger,
                max_delay=state.options.max_retry_seconds,
            )
            state.webhook_published = True
            logger.info("the admission webhook is configured")
            return
        except ApiError as e:
            logger.error("the admission webhook cannot be configured: %s", e)
            await asyncio.sleep(PUBLISH_RETRY_SECONDS)


def configuration_hooks(state: State, current: Mapping[str, Any]) -> list[Obj]:
    """The webhooks this replica publishes, given the configuration as read: its own CAs, and
    the still valid ones of the other replicas found there."""
    options = state.options
    assert state.webhook_bundle is not None, "no certificate yet"
    present = b""
    for hook in current.get("webhooks") or []:
        if hook.get("name") == injection.POD_WEBHOOK:
            present = str((hook.get("clientConfig") or {}).get("caBundle") or "").encode()
    now = datetime.datetime.now(datetime.UTC)
    try:
        merged = certs.bundle([state.webhook_bundle], base64.b64decode(present), now)
    except ValueError:  # a bundle edited into something that is no PEM: only ours then
        merged = certs.bundle([state.webhook_bundle], b"", now)
    return injection.webhooks(
        options.webhook_url,
        options.webhook_service,
        base64.b64encode(merged).decode(),
        options.webhook_failure_policy,
        options.webhook_namespaces,
        state.webhook_namespace,
        options.webhook_namespace_labels,
    )


async def write_configuration(state: State) -> Obj | None:
    """Read the configuration and write this replica's webhooks into it, unless it holds them.
    Returns the configuration as it was when something was written, else None."""
    path = configuration_path(state.options.webhook_configuration)
    api = state.client()
    current = await api.get(path)
    if current is None:
        raise ApiError(404, "NotFound", f"MutatingWebhookConfiguration {path} is missing")
    patch = drift.configuration_patch(current, configuration_hooks(state, current))
    if patch is None:
        return None
    await api.request("PATCH", path, patch, kube.MERGE_PATCH)
    return current


@kopf.on.mutate("", "v1", "pods", id=injection.POD_HANDLER, operations=["CREATE"])
async def inject_pod(
    body: kopf.Body,
    patch: kopf.Patch,
    namespace: str | None,
    memo: kopf.Memo,
    logger: logging.Logger,
    proxies_by_target: kopf.Index[tuple[str, str], str],
    **_: Any,
) -> None:
    """Add the sidecar to a new pod of a Webhook-mode EmbeddingProxy's target."""
    state = state_of(memo)
    pod = dict(body)
    try:
        target = injection.deployment_of(pod)
    except (AttributeError, TypeError):  # not a pod as the API server sends them
        return
    if not namespace or not target:
        return
    try:
        async with asyncio.timeout(LOOKUP_SECONDS):
            ops, proxy_name = await _injection(state, namespace, target, pod, proxies_by_target)
    except Exception as e:
        # Let it through (an error here would refuse the pod, whatever the failure policy):
        # the observe daemon finds it and has it re-created.
        logger.warning("a new pod of Deployment %s/%s: not injected: %r", namespace, target, e)
        return
    if ops:
        patch.fns.append(lambda raw: jsonpatch.apply_patch(raw, ops, in_place=True))
        logger.info(
            "injecting the sidecar of %s/%s into a new pod of Deployment %s",
            namespace,
            proxy_name,
            target,
        )


async def _injection(
    state: State,
    namespace: str,
    target: str,
    pod: Obj,
    index: Mapping[tuple[str, str], Any],
) -> tuple[list[Obj], str | None]:
    api = state.client()
    candidates = sorted(index.get((namespace, target), []))
    if not candidates:
        # Just created, maybe, and not yet seen by the operator's watch: ask the API server.
        listing = await api.request(
            "GET",
            f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{kube.segment(namespace)}/{names.PLURAL}",
        )
        candidates = sorted(
            p["metadata"]["name"]
            for p in listing.get("items") or []
            if ((p.get("spec") or {}).get("targetRef") or {}).get("name") == target
        )
    for name in candidates:
        proxy = await api.get(kube.proxy_path(namespace, name))
        if proxy is None or proxy["metadata"].get("deletionTimestamp"):
            continue
        proxy = with_sidecar_image(proxy, state.options.sidecar_image)
        try:
            spec = parse(proxy.get("spec") or {})
        except SpecError:
            continue
        if (spec.injection or state.options.injection) != "Webhook":
            continue
        deployment = await api.get(kube.deployment_path(namespace, target))
        selector = ((deployment or {}).get("spec") or {}).get("selector") or {}
        if not pods.matches(selector, (pod.get("metadata") or {}).get("labels") or {}):
            continue
        native = await state.native_supported()
        sleep_action = await state.sleep_action_supported()
        _, ops = injection.pod_plan(proxy, pod, native, sleep_action, state.options.allowed_images)
        return ops, name
    return [], None


@kopf.on.mutate(
    "",
    "v1",
    "configmaps",
    id=injection.PROBE_HANDLER,
    operations=["CREATE"],
    labels={injection.PROBE_LABEL: "true"},
)
def mark_probe(patch: kopf.Patch, **_: Any) -> None:
    """The operator's probe: the mark in the answer shows the API server reached the webhook."""
    patch.metadata.annotations[injection.PROBE_ANNOTATION] = "true"


async def webhook_reached(state: State, namespace: str) -> bool:
    """Whether the API server reaches the webhook now: a probe ConfigMap created with dryRun
    (nothing is stored) comes back marked by it."""
    if not state.options.webhook_port or not state.webhook_published:
        return False
    try:
        answer = await state.client().request(
            "POST",
            kube.configmap_path(namespace),
            injection.probe_configmap(namespace),
            params={"dryRun": "All"},
        )
    except ApiError:
        return False
    return injection.probe_reached(answer)


# ---- pods that escaped the webhook ----------------------------------------------------------

# SidecarInjected reasons while pods of the target run without the proxy.
ESCAPED_REASONS = ("WebhookUnreachable", "PodsWithoutSidecar")
# Pods named in a condition or an Event; the rest are counted.
NAMED_PODS = 20


async def recreate_escaped(
    state: State,
    proxy: Mapping[str, Any],
    deployment: Mapping[str, Any],
    items: list[Obj],
    logger: logging.Logger,
) -> tuple[Fact | None, list[str]]:
    """Webhook mode: the target's pods made without the sidecar (while the webhook was down or
    not yet configured: failurePolicy Ignore lets them through). Say so, and once the API server
    reaches the webhook, delete them so that their ReplicaSet makes new ones through it: the
    ones not ready at once, a ready one only while every other pod with the sidecar is ready (so
    capacity drops by at most one pod). Returns the SidecarInjected fact (None: no news) and the
    escaped pods' names."""
    namespace = proxy["metadata"]["namespace"]
    target = deployment["metadata"]["name"]
    selector = (deployment.get("spec") or {}).get("selector") or {}
    # Only the Deployment's own pods: one that merely matches its selector is someone else's.
    mine = await _deployments_pods(state, namespace, deployment, items)
    escaped = sorted(injection.escaped(mine, selector), key=lambda p: p["metadata"]["name"])
    names_ = [p["metadata"]["name"] for p in escaped]
    if not escaped:
        if _condition_reason(proxy, names.SIDECAR_INJECTED) in ESCAPED_REASONS:
            message = (
                f"every pod of Deployment {target!r} runs the sidecar; the admission webhook "
                "adds it to each new pod"
            )
            return Fact(names.SIDECAR_INJECTED, "True", "Webhook", message), []
        return None, []
    listed = ", ".join(names_[:NAMED_PODS]) + (
        f" and {len(names_) - NAMED_PODS} more" if len(names_) > NAMED_PODS else ""
    )
    if not await webhook_reached(state, namespace):
        message = (
            f"{len(names_)} pod(s) of Deployment {target!r} run without the proxy: {listed}; "
            "they were created while the admission webhook was not reached (failurePolicy "
            "Ignore), and are re-created as soon as it answers"
        )
        state.post_event(proxy, "Warning", "PodsWithoutSidecar", message, once=True)
        return Fact(names.SIDECAR_INJECTED, "False", "WebhookUnreachable", message), names_
    live = pods.live_pods(mine, selector)
    injected = [p for p in live if pods.runs_sidecar(p)]
    victims = [p for p in escaped if not pods.is_ready(p)]
    replicas = int((deployment.get("spec") or {}).get("replicas", 1))
    if not victims and injection.may_delete_ready(len(live), replicas, injected):
        victims = escaped[:1]
    api = state.client()
    for pod in victims:
        meta = pod["metadata"]
        path = f"{kube.pods_path(namespace)}/{kube.segment(meta['name'])}"
        try:
            await api.request("DELETE", path, {"preconditions": {"uid": meta["uid"]}})
        except ApiError as e:
            if e.status not in (404, 409):
                raise
            continue
        logger.info("deleted pod %s/%s, made without the sidecar", namespace, meta["name"])
    message = (
        f"{len(names_)} pod(s) of Deployment {target!r} were created without the proxy while "
        f"the admission webhook was not reached: {listed}; re-creating them through it"
    )
    state.post_event(proxy, "Warning", "PodsWithoutSidecar", message, once=True)
    if victims:
        gone = ", ".join(p["metadata"]["name"] for p in victims)
        state.post_event(
            proxy,
            "Normal",
            "EscapedPodsDeleted",
            f"deleted {gone}: its ReplicaSet makes new pods through the webhook",
        )
    return Fact(names.SIDECAR_INJECTED, "False", "PodsWithoutSidecar", message), names_


async def _deployments_pods(
    state: State, namespace: str, deployment: Mapping[str, Any], items: list[Obj]
) -> list[Obj]:
    """The pods a ReplicaSet controls that the Deployment controls (by uid, both links)."""
    uid = deployment["metadata"].get("uid")
    ours: dict[str, bool] = {}
    out = []
    for pod in items:
        ref = injection.controller_of(pod)
        if not ref or ref.get("kind") != "ReplicaSet" or ref.get("apiVersion") != "apps/v1":
            continue
        rs_name = str(ref.get("name") or "")
        if rs_name not in ours:
            try:
                rs = await state.client().get(kube.replicaset_path(namespace, rs_name))
            except ValueError:
                rs = None  # not a name: no ReplicaSet of ours
            ours[rs_name] = bool(
                rs
                and rs["metadata"].get("uid") == ref.get("uid")
                and injection.controlled_by(rs, "Deployment", uid)
            )
        if ours[rs_name]:
            out.append(pod)
    return out


def _condition_reason(proxy: Mapping[str, Any], type_: str) -> str | None:
    for c in (proxy.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("reason"))
    return None
