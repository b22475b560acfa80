"""Reconciliation: the sidecar and its ConfigMap as the EmbeddingProxy says.

- An EmbeddingProxy created, changed or found at start-up is reconciled: its ConfigMap written, the
  sidecar put into its target Deployment, status updated.
- Every event of a targeted Deployment reconciles its EmbeddingProxy again: a Deployment created
  later gets the sidecar, a sidecar removed by hand comes back.
- Deleting an EmbeddingProxy (or retargeting it) takes out what the operator added, and nothing
  else.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from ..io import kube
from ..io.kube import ApiError
from ..io.writes import (
    CONFLICT,
    delete_configmap,
    write_configmap,
    write_status,
)
from ..logic import patches, pods, replica_failure
from ..logic.conditions import Fact, now
from ..logic.drift import drifted
from ..logic.plan import Plan, config_fact, plan, release_marked
from ..model import names
from ..model.images import with_sidecar_image
from ..model.settings import retry_delay
from ..model.spec import target_name
from .state import State, state_of

Obj = dict[str, Any]
# Rounds of read, plan and patch within one reconciliation (about 1.5 s of backoff) before it
# fails and is retried as a whole: by kopf for a change of the EmbeddingProxy, by
# `target_changed` itself for an event of the Deployment.
PATCH_ATTEMPTS = 5
# Conditions whose Warning is posted once, and again should they come back after clearing.
NEWS_AGAIN = (names.ROLLOUT_NEEDS_SPARE_GPU, names.REPLICA_FAILURE)


@kopf.index(names.GROUP, names.VERSION, names.PLURAL)
def proxies_by_target(
    namespace: str, name: str, spec: Mapping[str, Any], **_: Any
) -> dict[tuple[str, str], str] | None:
    """Which EmbeddingProxy targets which Deployment."""
    target = target_name(spec)
    return {(namespace, target): name} if target else None


@kopf.on.resume(names.GROUP, names.VERSION, names.PLURAL)
@kopf.on.create(names.GROUP, names.VERSION, names.PLURAL)
@kopf.on.update(names.GROUP, names.VERSION, names.PLURAL)
async def reconcile_proxy(
    namespace: str,
    name: str,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    memo: kopf.Memo,
    logger: logging.Logger,
    retry: int,
    **_: Any,
) -> None:
    state = state_of(memo)
    try:
        old_target = target_name((old or {}).get("spec"))
        new_target = target_name((new or {}).get("spec"))
        if old_target and old_target != new_target:
            await release_target(state, namespace, name, old_target, logger)
        await reconcile(state, namespace, name, logger)
        # A changed spec (autoscaling switched on, say) is acted on now, not at the next poll.
        state.wakeup(namespace, name).set()
    except ApiError as e:
        state.metrics.failed(namespace, name)
        delay = retry_delay(retry, state.options.max_retry_seconds)
        raise kopf.TemporaryError(f"Kubernetes API: {e}; retrying in {delay:.0f} s", delay) from e


@kopf.on.event("apps", "v1", "deployments")
async def target_changed(
    namespace: str,
    name: str,
    proxies_by_target: kopf.Index[tuple[str, str], str],
    memo: kopf.Memo,
    logger: logging.Logger,
    **_: Any,
) -> None:
    state = state_of(memo)
    for proxy_name in list(proxies_by_target.get((namespace, name), [])):
        try:
            # kopf never retries an event handler, and no other event may come: keep at it
            # until the Deployment is as planned (or the EmbeddingProxy is gone).
            await kube.retrying(
                functools.partial(reconcile, state, namespace, proxy_name, logger),
                what=f"reconciling {namespace}/{proxy_name} after a Deployment event",
                logger=logger,
                max_delay=state.options.max_retry_seconds,
            )
        except ApiError as e:
            # Refused as it is (403, 400): status says why; a change of either object retries.
            state.metrics.failed(namespace, proxy_name)
            logger.warning("reconciling %s/%s after a Deployment event: %s", namespace, name, e)


async def reconcile(state: State, namespace: str, name: str, logger: logging.Logger) -> None:
    api = state.client()
    async with state.lock(namespace, name):
        proxy = await api.get(kube.proxy_path(namespace, name))
        if proxy is None or proxy["metadata"].get("deletionTimestamp"):
            return
        proxy = with_sidecar_image(proxy, state.options.sidecar_image)
        target = target_name(proxy.get("spec"))
        native = await state.native_supported()
        sleep_action = await state.sleep_action_supported()
        deployment = await api.get(kube.deployment_path(namespace, target)) if target else None
        allowed = state.options.allowed_images
        default = state.options.injection
        webhook = bool(state.options.webhook_port)
        previous = _injected_hash(proxy)

        def planned_for(current: Obj | None) -> Plan:
            return plan(proxy, current, native, sleep_action, allowed, default, previous, webhook)

        result = planned_for(deployment)
        facts = list(result.facts)

        written = False
        if result.configmap is not None:
            cm_name = result.configmap["metadata"]["name"]
            try:
                change, before = await write_configmap(
                    api, result.configmap, proxy["metadata"].get("uid")
                )
            except ApiError as e:
                # Status says so (and never that the config is written); kopf retries.
                message = f"writing ConfigMap {cm_name!r} failed: {e}"
                fact = Fact(names.CONFIG_APPLIED, "False", "WriteFailed", message)
                await write_status(api, proxy, [fact], {})
                raise
            if change == CONFLICT:
                message = (
                    f"ConfigMap {cm_name!r} exists and is not this EmbeddingProxy's; "
                    "rename or delete it (the operator does not take it over)"
                )
                state.post_event(proxy, "Warning", "NameConflict", message, once=True)
                facts = [
                    f for f in facts if f.type not in (names.CONFIG_APPLIED, names.SIDECAR_INJECTED)
                ]
                facts.append(Fact(names.CONFIG_APPLIED, "False", "NameConflict", message))
                facts.append(Fact(names.SIDECAR_INJECTED, "False", "NameConflict", message))
                await write_status(api, proxy, facts, {})
                return
            written = True
            drift = drifted(proxy, change, before, result.version)
            if drift:
                message = f"ConfigMap {cm_name!r} {drift}: put back (config {result.version})"
                state.post_event(proxy, "Warning", "ConfigMapRepaired", message)
                logger.warning(message)
            elif change:
                state.post_event(proxy, "Normal", "ConfigWritten", _config_message(change, result))

        path = kube.deployment_path(namespace, target)
        rounds = 0

        async def inject() -> tuple[Obj | None, Plan]:
            """Patch the Deployment as planned; after a failed round, read it and plan again
            (a conflict means it changed since it was read)."""
            nonlocal rounds
            rounds += 1
            current = deployment if rounds == 1 else await api.get(path)
            planned = result if rounds == 1 else planned_for(current)
            if planned.ops and current is not None:
                before = patches.find_sidecar(current)
                await api.request("PATCH", path, planned.ops, kube.JSON_PATCH)
                state.post_event(proxy, "Normal", *_injection_event(before, proxy, planned, target))
            return current, planned

        failure: ApiError | None = None
        if result.ops and deployment is not None:
            try:
                deployment, result = await kube.retrying(
                    inject,
                    what=f"patching Deployment {namespace}/{target}",
                    logger=logger,
                    max_delay=state.options.max_retry_seconds,
                    attempts=PATCH_ATTEMPTS,
                )
            except ApiError as e:
                failure = e
            facts = list(result.facts)
        if failure is not None:
            message = f"patching Deployment {target!r} failed: {failure}"
            facts = [f for f in facts if f.type != names.SIDECAR_INJECTED]
            facts.append(Fact(names.SIDECAR_INJECTED, "False", "PatchFailed", message))

        for notice in result.warnings:
            state.post_event(proxy, "Warning", notice.reason, notice.message, once=True)
        before = (proxy.get("status") or {}).get("conditions") or []
        for fact in facts:
            if fact.type in NEWS_AGAIN and fact.status == "False":
                # Fixed: should the trouble come back, it is news again.
                state.forget_notices(proxy, fact.type)
            if fact.type == names.REPLICA_FAILURE and replica_failure.cleared(before, fact):
                message = f"the ReplicaSet of Deployment {target!r} creates pods again"
                state.post_event(proxy, "Normal", replica_failure.CLEARED, message)

        status = dict(proxy.get("status") or {})
        if written and status.get("configVersion") != result.version:
            # Until the pods report the new version, it is not applied.
            facts.append(config_fact(status.get("podsReady", 0), 0, result.version))
        escaped = ((proxy.get("status") or {}).get("injection") or {}).get("podsWithoutSidecar")
        if result.injection == "Webhook" and escaped and failure is None:
            # The observe daemon's word on the pods stands until it finds none escaped.
            facts = [f for f in facts if f.type != names.SIDECAR_INJECTED or f.status != "True"]
        summary = _summary(result, deployment)
        if "injection" in summary:
            # What the observe daemon keeps there (the pods without the sidecar) stays.
            current = (proxy.get("status") or {}).get("injection") or {}
            summary["injection"] = {**current, **summary["injection"]}
        if failure is not None and "injection" in summary:
            # Not rolled yet: the next round must still see the change.
            summary["injection"]["hash"] = previous
        await write_status(api, proxy, facts, summary)
        if failure is not None:
            raise failure


def _summary(result: Plan, deployment: Mapping[str, Any] | None) -> Obj:
    out: Obj = {}
    if result.configmap is not None:
        out["configMapName"] = result.configmap["metadata"]["name"]
        out["configVersion"] = result.version
    if result.mode:
        out["sidecarMode"] = result.mode
    if result.spec is not None:
        out["injection"] = {"mode": result.injection, "hash": result.injection_hash}
    dep_status = (deployment or {}).get("status") or {}
    out["replicas"] = int(dep_status.get("replicas", 0)) if deployment else 0
    out["readyReplicas"] = int(dep_status.get("readyReplicas", 0)) if deployment else 0
    return out


def _config_message(change: str, result: Plan) -> str:
    if change == "created":
        return f"wrote config {result.version} to ConfigMap {result.configmap['metadata']['name']}"
    return (
        f"config {result.version} written; batching and limits apply live, "
        "other settings roll the pods"
    )


def _injected_hash(proxy: Mapping[str, Any]) -> str | None:
    """Webhook mode: the hash of the injection the target's pods were given so far."""
    injection = (proxy.get("status") or {}).get("injection") or {}
    return injection.get("hash") if injection.get("mode") == "Webhook" else None


def _injection_event(
    before: tuple[str, Obj] | None, proxy: Mapping[str, Any], result: Plan, target: str
) -> tuple[str, str]:
    if result.injection == "Webhook":
        return (
            "PodsRolling",
            f"the admission webhook injects the pods of Deployment {target!r}, and what it "
            "injects changed (or the sidecar left the pod template): its pods roll",
        )
    if before is None:
        injected = _condition_status(proxy, names.SIDECAR_INJECTED) == "True"
        if injected:
            return "SidecarRestored", f"the sidecar was gone from Deployment {target!r}: put back"
        return "SidecarInjected", f"added the sidecar ({result.mode}) to Deployment {target!r}"
    return "SidecarUpdated", f"updated the sidecar in Deployment {target!r}; its pods roll"


def _condition_status(proxy: Mapping[str, Any], type_: str) -> str | None:
    for c in (proxy.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


# ---- deletion and retargeting ---------------------------------------------------------------


async def _pods_injected(
    api: kube.Kube, namespace: str, deployment: Mapping[str, Any], name: str
) -> bool:
    """Whether a live pod of the Deployment runs the sidecar that the webhook put there for
    this EmbeddingProxy. Only its own: the pods of another one that injected the Deployment
    (this one stood back, TargetClaimed) still run that one's sidecar until their rollout ends,
    and are no reason for this one to roll them again."""
    selector = (deployment.get("spec") or {}).get("selector") or {}
    listing = await api.request(
        "GET", kube.pods_path(namespace), params={"labelSelector": pods.selector_query(selector)}
    )
    live = pods.live_pods(listing.get("items") or [], selector)
    return any(pods.runs_sidecar_of(p, name) for p in live)


@kopf.on.delete(names.GROUP, names.VERSION, names.PLURAL)
async def release(
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    meta: Mapping[str, Any],
    memo: kopf.Memo,
    logger: logging.Logger,
    retry: int,
    **_: Any,
) -> None:
    state = state_of(memo)
    target = target_name(spec)
    try:
        async with state.lock(namespace, name):
            if target:
                await release_target(state, namespace, name, target, logger)
            await delete_configmap(
                state.client(), namespace, names.configmap_name(name), meta.get("uid")
            )
    except ApiError as e:
        delay = retry_delay(retry, state.options.max_retry_seconds)
        raise kopf.TemporaryError(f"Kubernetes API: {e}; retrying in {delay:.0f} s", delay) from e
    state.forget(namespace, name)


async def release_target(
    state: State, namespace: str, name: str, target: str, logger: logging.Logger
) -> None:
    """Take the sidecar out of a Deployment this EmbeddingProxy injected (only that one)."""
    api = state.client()
    path = kube.deployment_path(namespace, target)

    async def remove() -> None:
        deployment = await api.get(path)
        if deployment is None:
            return
        owner = patches.owner_of(deployment)
        if owner is not None and owner != name:
            return
        ops: list[Obj] = []
        if release_marked(deployment, name):
            ops = patches.remove_ops(deployment)
        if not ops and await _pods_injected(api, namespace, deployment, name):
            # Webhook mode, no change ever rolled the pods: roll them now, as `kubectl rollout
            # restart` does, so that none keeps the sidecar.
            ops = patches.restart_ops(deployment, now())
        if not ops:
            return
        try:
            await api.request("PATCH", path, ops, kube.JSON_PATCH)
        except ApiError as e:
            if e.status != 422:
                raise
            # 422 is also the patch's `test` of the resourceVersion failing: the Deployment
            # changed since it was read (another EmbeddingProxy's release, the controller's
            # status), so read it and plan again.
            fresh = await api.get(path)
            rv = (fresh or {}).get("metadata", {}).get("resourceVersion")
            if fresh is not None and rv != deployment["metadata"].get("resourceVersion"):
                raise
            # The Deployment without it would be invalid: retrying changes nothing, and the
            # EmbeddingProxy must not hang in deletion.
            logger.warning("left Deployment %s/%s as it is: %s", namespace, target, e)
            return
        logger.info("removed the sidecar from Deployment %s/%s", namespace, target)

    await kube.retrying(
        remove,
        what=f"removing the sidecar from Deployment {namespace}/{target}",
        logger=logger,
        max_delay=state.options.max_retry_seconds,
        attempts=PATCH_ATTEMPTS,
    )
