"""Observing and scaling: a daemon per EmbeddingProxy asks the ready pods' proxies which config
they run and how much work they hold, counts that into status, and with autoscaling on scales the
target through its `scale` subresource (or writes a KEDA ScaledObject that does)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from ..io import kube, metrics
from ..io.kube import ApiError
from ..io.writes import changes, remove_scaled_object, write_status
from ..logic import (
    drift,
    hpa,
    hpa_policy,
    injection,
    keda,
    pods,
    reloads,
    render,
    replica_failure,
    scaling_status,
    scrape,
)
from ..logic.conditions import Fact
from ..logic.plan import config_fact, lagging, plan
from ..model import names
from ..model.images import with_sidecar_image
from ..model.settings import image_allowed
from ..model.spec import ProxySpec, SpecError, parse, target_name
from .admission import recreate_escaped
from .caches import Cached
from .state import State, state_of

Obj = dict[str, Any]


@kopf.daemon(names.GROUP, names.VERSION, names.PLURAL, cancellation_timeout=5.0)
async def observe(
    stopped: kopf.DaemonStopped,
    namespace: str,
    name: str,
    memo: kopf.Memo,
    logger: logging.Logger,
    body: kopf.Body,
    deployments_by_name: kopf.Index[tuple[str, str], Obj],
    pods_by_namespace: kopf.Index[str, Obj],
    hpas_by_namespace: kopf.Index[str, Obj],
    scaled_objects_by_namespace: kopf.Index[str, Obj],
    scalers_by_target: kopf.Index[tuple[str, str], tuple[str, str]],
    **_: Any,
) -> None:
    """Ask the ready pods' proxies which config they run and how much work they hold; count them
    into status, and autoscale. What it reads of the cluster comes from kopf's watches: the
    EmbeddingProxy is the daemon's live body, the Deployment and the pods are indexed."""
    state = state_of(memo)
    cached = Cached(
        body,
        deployments_by_name,
        pods_by_namespace,
        hpas_by_namespace,
        scaled_objects_by_namespace,
        scalers_by_target,
    )
    first = True
    wake = state.wakeup(namespace, name)
    while not stopped and not state.closed:
        interval = state.options.status_seconds
        wake.clear()
        try:
            interval = await observe_once(state, cached, logger, first) or interval
            first = False
        except Exception as e:
            if stopped or state.closed:
                # The operator is exiting: its clean-up closes the shared sessions, and kopf may
                # still be running this poll. Its outcome no longer matters.
                return
            if not isinstance(e, ApiError):
                raise
            state.metrics.failed(namespace, name)
            logger.warning("observing pods of %s/%s: %s", namespace, name, e)
        await _pause(stopped, wake, interval)


async def _pause(stopped: kopf.DaemonStopped, wake: asyncio.Event, seconds: float) -> None:
    """Sleep until the next poll, the daemon is stopped, or the spec changed."""
    waiters = [asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def observe_once(
    state: State, cached: Cached, logger: logging.Logger, first: bool = False
) -> float | None:
    api = state.client()
    proxy = cached.proxy()
    if proxy["metadata"].get("deletionTimestamp"):
        return None
    namespace, name = proxy["metadata"]["namespace"], proxy["metadata"]["name"]
    proxy = with_sidecar_image(proxy, state.options.sidecar_image)
    target = target_name(proxy.get("spec"))
    deployment = cached.deployment(namespace, target) if target else None
    if deployment is None:
        return None
    try:
        spec = parse(proxy.get("spec") or {})
    except SpecError:
        return None
    if not image_allowed(spec.sidecar.image, state.options.allowed_images):
        return None  # refused by `reconcile`: nothing of this EmbeddingProxy is acted on
    version = render.proxy_config(spec)["version"]
    selector = (deployment.get("spec") or {}).get("selector") or {}
    items = [p for p in cached.pods(namespace) if pods.matches(selector, pods.labels(p))]
    escape: tuple[Fact | None, list[str]] = (None, [])
    planned = plan(
        proxy,
        deployment,
        await state.native_supported(),
        await state.sleep_action_supported(),
        state.options.allowed_images,
        state.options.injection,
        webhook=bool(state.options.webhook_port),
    )
    if injection.webhook_injects(planned):
        escape = await recreate_escaped(state, proxy, deployment, items, logger)
    ready = pods.proxy_pods(items, selector)
    texts = await state.fetcher().texts(
        [pods.metrics_url(p, spec.sidecar.ports.metrics) for p in ready]
    )
    pages = [scrape.parse_metrics(t) if t is not None else scrape.ProxyReading() for t in texts]
    by_pod = {p["metadata"]["name"]: page for p, page in zip(ready, pages, strict=True)}
    loads = reloads.track(state.reloads.get((namespace, name), {}), by_pod)
    state.reloads[namespace, name] = loads
    # On the version, and no reload failed since it loaded it.
    applied = {
        pod
        for pod, page in by_pod.items()
        if page.config_version == version and not loads[pod].failed_since
    }
    current = len(applied)
    readings = {p["metadata"]["name"]: page.load for p, page in zip(ready, pages, strict=True)}
    if planned.acts:
        fact, scaling = await autoscale(
            state, cached, proxy, spec, pods.live_pods(items, selector), readings, first, logger
        )
    else:  # refused (a target claimed, a conflict): its scale is not ours to set either
        if ((proxy.get("status") or {}).get("autoscaling") or {}).get("scaledObjectName"):
            ours = names.scaled_object_name(name)
            await remove_scaled_object(api, namespace, ours, proxy["metadata"].get("uid"), logger)
        fact, scaling = scaling_status.refused_fact(planned.facts), None
    load = state.metrics.observe(
        namespace,
        name,
        deployment,
        spec.autoscaling,
        fact.reason,
        scaling,
        metrics.pod_readings(ready, texts, pages, applied),
    )

    def status_for(fresh: Mapping[str, Any]) -> tuple[list[Fact], Obj]:
        fields = {
            "podsReady": len(ready),
            "podsOnConfigVersion": current,
            "replicas": int((deployment.get("status") or {}).get("replicas", 0)),
            "readyReplicas": int((deployment.get("status") or {}).get("readyReplicas", 0)),
            "autoscaling": scaling_status.replacing(
                (fresh.get("status") or {}).get("autoscaling"), scaling
            ),
            **load,
        }
        facts = [fact]
        if escape[0] is not None:
            # Never "injected" while the target's new pods cannot be created (reconcile says why).
            facts.append(replica_failure.guarded(escape[0], deployment, target))
        injected = (fresh.get("status") or {}).get("injection")
        if injected or escape[1]:
            fields["injection"] = {**(injected or {}), "podsWithoutSidecar": escape[1][:20] or None}
        if (fresh.get("status") or {}).get("configVersion") == version:
            # Only a config the reconciliation wrote (a refused or failed write says why).
            behind = [
                lagging(pod, page.config_version, page.failed_reloads, loads[pod].failed_since)
                for pod, page in by_pod.items()
                if pod not in applied
            ]
            facts.insert(0, config_fact(len(ready), current, version, behind))
        return facts, fields

    async with state.lock(namespace, name):
        if not changes(cached.proxy(), *status_for(cached.proxy())):
            return poll_seconds(spec)  # nothing to say: no request at all
        # Something to write: read it afresh (the cache may lag a write of `reconcile`'s, and
        # conditions are one list, written whole).
        fresh = await api.get(kube.proxy_path(namespace, name))
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return None
        await write_status(api, fresh, *status_for(fresh))
    return poll_seconds(spec)


def poll_seconds(spec: ProxySpec) -> float | None:
    """The autoscaler's poll interval; None: the status interval."""
    if spec.autoscaling.enabled:
        return float(spec.autoscaling.poll_seconds)
    return None


# ---- autoscaling ----------------------------------------------------------------------------


async def autoscale(
    state: State,
    cached: Cached,
    proxy: Mapping[str, Any],
    spec: ProxySpec,
    live: list[Obj],
    readings: dict[str, float | None],
    first: bool,
    logger: logging.Logger,
) -> tuple[Fact, Obj | None]:
    """One poll's autoscaling: the `Autoscaling` condition and `status.autoscaling` (None: none).
    Builtin scales the target's `scale` subresource (never its spec.replicas), KEDA keeps our
    ScaledObject as the spec says, and either stands back from another autoscaler."""
    api = state.client()
    meta = proxy["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid")
    auto = spec.autoscaling
    status = (proxy.get("status") or {}).get("autoscaling") or {}
    target = spec.scale_target_name
    ours = names.scaled_object_name(name)
    with_keda = auto.enabled and auto.provider == "KEDA"
    # Only when we may have written one: after a start (a crash could have hidden it from
    # status) or when status names it.
    if not with_keda and (first or status.get("scaledObjectName")):
        await remove_scaled_object(api, namespace, ours, uid, logger)
    if not auto.enabled or auto.provider == "None":
        return scaling_status.disabled_fact(auto.enabled, auto.provider), None

    conflict = scaling_status.conflicting_autoscaler(
        cached.hpas(namespace),
        cached.scaled_objects(namespace),
        target,
        ours,
        uid,
    ) or scaling_status.first_scaler(cached.scalers_of(namespace, target), name)
    if conflict is not None:
        message = conflict.message(target)
        state.post_event(proxy, "Warning", "ConflictingAutoscaler", message, once=True)
        if with_keda:
            await remove_scaled_object(api, namespace, ours, uid, logger)
        fields = {"scaleTargetName": target, "lastScaleTime": status.get("lastScaleTime")}
        return Fact(names.AUTOSCALING, "False", "ConflictingAutoscaler", message), fields
    if with_keda:
        return await write_scaled_object(state, cached, proxy, spec)
    return await scale_builtin(state, cached, proxy, spec, live, readings, logger)


async def scale_builtin(
    state: State,
    cached: Cached,
    proxy: Mapping[str, Any],
    spec: ProxySpec,
    live: list[Obj],
    readings: dict[str, float | None],
    logger: logging.Logger,
) -> tuple[Fact, Obj]:
    api = state.client()
    namespace = proxy["metadata"]["namespace"]
    status = (proxy.get("status") or {}).get("autoscaling") or {}
    target = spec.scale_target_name
    path = kube.scale_path(namespace, target)
    # The Deployment's spec.replicas is its scale's, as the watch last saw it.
    scale = cached.deployment(namespace, target)
    if scale is None:
        message = f"Deployment {target!r} (the scale target) does not exist in {namespace!r}"
        fields = {"scaleTargetName": target, "lastScaleTime": status.get("lastScaleTime")}
        return Fact(names.AUTOSCALING, "False", "ScaleTargetNotFound", message), fields

    policy = hpa_policy.policy_of(spec)
    clock = time.time()  # wall-clock time: the history outlives this process
    decision = hpa.decide(
        int((scale.get("spec") or {}).get("replicas") or 0),
        scaling_status.samples(live, readings, policy.signal_in_scaled_pods),
        policy,
        scaling_status.history_from_status(status.get("history")),
        clock,
    )
    fact = scaling_status.decision_fact(decision, policy)
    history, last = decision.history, status.get("lastScaleTime")
    event = scaling_status.scale_event(decision, target)
    if event is not None:
        try:
            replicas = {"spec": {"replicas": decision.desired_replicas}}
            await api.request("PATCH", path, replicas, kube.MERGE_PATCH)
        except ApiError as e:
            # Not counted against the rate policies: nothing changed.
            history = decision.history_if_not_applied
            message = f"setting Deployment {target!r} to {decision.desired_replicas} failed: {e}"
            fact = Fact(names.AUTOSCALING, "False", "ScaleFailed", message)
            state.post_event(proxy, "Warning", "FailedScale", message, once=True)
        else:
            last = scaling_status.timestamp(clock)
            state.post_event(proxy, "Normal", *event)
            logger.info(event[1])
    return fact, scaling_status.decision_status(decision, target, history, last)


async def write_scaled_object(
    state: State, cached: Cached, proxy: Mapping[str, Any], spec: ProxySpec
) -> tuple[Fact, Obj]:
    """Create our ScaledObject, or bring it back to what the spec says."""
    api = state.client()
    meta = proxy["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid")
    wanted = keda.scaled_object(name, namespace, uid, spec)
    ours, target = wanted["metadata"]["name"], spec.scale_target_name
    fields = {"scaleTargetName": target, "scaledObjectName": ours}
    current = cached.scaled_object(namespace, ours)
    written = ((proxy.get("status") or {}).get("autoscaling") or {}).get("scaledObjectName")
    try:
        if current is None:
            await api.request("POST", kube.scaledobject_path(namespace), wanted)
            if written == ours:  # status says it was there: someone deleted it
                message = f"ScaledObject {ours!r} was deleted: put back"
                state.post_event(proxy, "Warning", "ScaledObjectRepaired", message)
            else:
                message = f"created ScaledObject {ours!r}"
                state.post_event(proxy, "Normal", "ScaledObjectCreated", message)
        elif not keda.owned_by(current, uid):
            message = f"ScaledObject {ours!r} exists and is not this EmbeddingProxy's"
            state.post_event(proxy, "Warning", "ConflictingAutoscaler", message, once=True)
            fields = {"scaleTargetName": target}
            return Fact(names.AUTOSCALING, "False", "ConflictingAutoscaler", message), fields
        elif (patch := drift.scaled_object_patch(current, wanted)) is not None:
            await api.request(
                "PATCH", kube.scaledobject_path(namespace, ours), patch, kube.MERGE_PATCH
            )
            if drift.edited_by_others(current, names.FIELD_MANAGER, "f:spec"):
                who = drift.changed_by(current, names.FIELD_MANAGER, "f:spec")
                message = f"ScaledObject {ours!r} was changed by {who}: put back"
                state.post_event(proxy, "Warning", "ScaledObjectRepaired", message)
            else:
                message = f"updated ScaledObject {ours!r}"
                state.post_event(proxy, "Normal", "ScaledObjectUpdated", message)
    except ApiError as e:
        if e.status == 404:
            message = "the keda.sh/v1alpha1 ScaledObject API is not served: install KEDA"
            return Fact(names.AUTOSCALING, "False", "KEDANotInstalled", message), {
                "scaleTargetName": target
            }
        if e.status in (409, 429) or not 400 <= e.status < 500:
            raise  # transient: the next poll tries again
        # Refused as it is (KEDA's admission webhook, say): say why rather than retry blindly.
        message = f"writing ScaledObject {ours!r} was refused: {e}"
        state.post_event(proxy, "Warning", "ScaledObjectRefused", message, once=True)
        return Fact(names.AUTOSCALING, "False", "ScaledObjectRefused", message), {
            "scaleTargetName": target
        }
    server = spec.autoscaling.keda.server_address
    return scaling_status.keda_fact(ours, target, server), fields
