"""kopf handlers: read from the API, call the pure functions, write the results, say what happened.

- An EmbeddingProxy created, changed or found at start-up is reconciled: its ConfigMap written, the
  sidecar put into its target Deployment, status updated.
- Every event of a targeted Deployment reconciles its EmbeddingProxy again: a Deployment created
  later gets the sidecar, a sidecar removed by hand comes back.
- A daemon per EmbeddingProxy asks the ready pods' proxies which config they run and how much
  work they hold, and with autoscaling on scales the target through its `scale` subresource
  (or writes a KEDA ScaledObject that does).
- Deleting an EmbeddingProxy takes out what the operator added, and nothing else.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from . import (
    hpa,
    hpa_policy,
    keda,
    kube,
    metrics,
    names,
    patches,
    pods,
    render,
    scaling_status,
    scrape,
)
from .conditions import Fact, merge, now, without_times
from .kube import ApiError, Kube
from .reconcile import Plan, config_fact, plan
from .settings import Options, native_from_version, retry_delay, sleep_action_from_version
from .spec import ProxySpec, SpecError, parse

Obj = dict[str, Any]
# Rounds of read, plan and patch within one reconciliation (about 1.5 s of backoff) before it
# fails and is retried as a whole: by kopf for a change of the EmbeddingProxy, by
# `target_changed` itself for an event of the Deployment.
PATCH_ATTEMPTS = 5


# ---- start-up and credentials ---------------------------------------------------------------


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    options = Options.from_env(os.environ)
    memo.options = options
    memo.locks = {}
    memo.notices = {}
    memo.wakeups = {}
    memo.kube = None
    memo.native = None
    memo.sleep_action = None
    memo.scraper = None
    memo.metrics = metrics.OperatorMetrics()
    if options.metrics_port:
        await memo.metrics.serve("0.0.0.0", options.metrics_port)
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=names.PERSISTENCE_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.PERSISTENCE_PREFIX, key="last-handled-configuration"
    )
    settings.watching.server_timeout = options.watch_seconds
    settings.watching.client_timeout = options.watch_seconds + 30
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = options.api_timeout_seconds * 3
    settings.posting.reporting_component = names.FIELD_MANAGER
    # Events are posted for warnings and changes; kopf's own per-handler chatter stays in logs.
    settings.posting.level = logging.WARNING


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    info: kopf.ConnectionInfo | None = None
    try:
        info = kopf.login_via_client(**kwargs)
    except kopf.LoginError:
        info = None
    info = info or kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    memo.connection = info
    return info


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "kube", None) is not None:
        await memo.kube.close()
    if getattr(memo, "scraper", None) is not None:
        await memo.scraper.close()
    if getattr(memo, "metrics", None) is not None:
        await memo.metrics.close()


def client(memo: kopf.Memo) -> Kube:
    """The API client for the current credentials (a re-login gives a new one)."""
    if memo.kube is None or memo.kube_info is not memo.connection:
        if memo.kube is not None:
            asyncio.get_running_loop().create_task(memo.kube.close())
        memo.kube = Kube(memo.connection, memo.options.api_timeout_seconds)
        memo.kube_info = memo.connection
    return memo.kube


async def native_supported(memo: kopf.Memo) -> bool:
    if memo.native is None:
        choice = memo.options.native_sidecars
        if choice != "auto":
            memo.native = choice == "true"
        else:
            version = await client(memo).request("GET", "/version")
            memo.native = native_from_version(
                str(version.get("major", "0")), str(version.get("minor", "0"))
            )
    return bool(memo.native)


async def sleep_action_supported(memo: kopf.Memo) -> bool:
    if memo.sleep_action is None:
        version = await client(memo).request("GET", "/version")
        memo.sleep_action = sleep_action_from_version(
            str(version.get("major", "0")), str(version.get("minor", "0"))
        )
    return bool(memo.sleep_action)


def lock(memo: kopf.Memo, namespace: str, name: str) -> asyncio.Lock:
    return memo.locks.setdefault((namespace, name), asyncio.Lock())


def wakeup(memo: kopf.Memo, namespace: str, name: str) -> asyncio.Event:
    """Set to make the EmbeddingProxy's daemon poll at once."""
    return memo.wakeups.setdefault((namespace, name), asyncio.Event())


# ---- which EmbeddingProxy targets which Deployment ------------------------------------------


@kopf.index(names.GROUP, names.VERSION, names.PLURAL)
def proxies_by_target(
    namespace: str, name: str, spec: Mapping[str, Any], **_: Any
) -> dict[tuple[str, str], str] | None:
    target = (spec.get("targetRef") or {}).get("name")
    return {(namespace, target): name} if target else None


# ---- reconciliation -------------------------------------------------------------------------


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
    try:
        old_target = ((old or {}).get("spec") or {}).get("targetRef", {}).get("name")
        new_target = ((new or {}).get("spec") or {}).get("targetRef", {}).get("name")
        if old_target and old_target != new_target:
            await release_target(memo, namespace, name, old_target, logger)
        await reconcile(memo, namespace, name, logger)
        # A changed spec (autoscaling switched on, say) is acted on now, not at the next poll.
        wakeup(memo, namespace, name).set()
    except ApiError as e:
        memo.metrics.failed(namespace, name)
        delay = retry_delay(retry, memo.options.max_retry_seconds)
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
    for proxy_name in list(proxies_by_target.get((namespace, name), [])):
        try:
            # kopf never retries an event handler, and no other event may come: keep at it
            # until the Deployment is as planned (or the EmbeddingProxy is gone).
            await kube.retrying(
                functools.partial(reconcile, memo, namespace, proxy_name, logger),
                what=f"reconciling {namespace}/{proxy_name} after a Deployment event",
                logger=logger,
                max_delay=memo.options.max_retry_seconds,
            )
        except ApiError as e:
            # Refused as it is (403, 400): status says why; a change of either object retries.
            memo.metrics.failed(namespace, proxy_name)
            logger.warning("reconciling %s/%s after a Deployment event: %s", namespace, name, e)


async def reconcile(memo: kopf.Memo, namespace: str, name: str, logger: logging.Logger) -> None:
    api = client(memo)
    async with lock(memo, namespace, name):
        proxy = await api.get(kube.proxy_path(namespace, name))
        if proxy is None or proxy["metadata"].get("deletionTimestamp"):
            return
        target = ((proxy.get("spec") or {}).get("targetRef") or {}).get("name", "")
        native = await native_supported(memo)
        sleep_action = await sleep_action_supported(memo)
        deployment = await api.get(kube.deployment_path(namespace, target)) if target else None
        result = plan(proxy, deployment, native, sleep_action)
        facts = list(result.facts)

        if result.configmap is not None:
            change = await write_configmap(api, result.configmap)
            if change:
                post(memo, proxy, "Normal", "ConfigWritten", _config_message(change, result))

        path = kube.deployment_path(namespace, target)
        rounds = 0

        async def inject() -> tuple[Obj | None, Plan]:
            """Patch the Deployment as planned; after a failed round, read it and plan again
            (a conflict means it changed since it was read)."""
            nonlocal rounds
            rounds += 1
            current = deployment if rounds == 1 else await api.get(path)
            planned = result if rounds == 1 else plan(proxy, current, native, sleep_action)
            if planned.ops and current is not None:
                before = patches.find_sidecar(current)
                await api.request("PATCH", path, planned.ops, kube.JSON_PATCH)
                post(memo, proxy, "Normal", *_injection_event(before, proxy, planned, target))
            return current, planned

        failure: ApiError | None = None
        if result.ops and deployment is not None:
            try:
                deployment, result = await kube.retrying(
                    inject,
                    what=f"patching Deployment {namespace}/{target}",
                    logger=logger,
                    max_delay=memo.options.max_retry_seconds,
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
            post(memo, proxy, "Warning", notice.reason, notice.message, once=True)

        status = dict(proxy.get("status") or {})
        if result.version and status.get("configVersion") != result.version:
            # Until the pods report the new version, it is not applied.
            facts.append(config_fact(status.get("podsReady", 0), 0, result.version))
        await write_status(api, proxy, facts, _summary(result, deployment))
        if failure is not None:
            raise failure


def _summary(result: Plan, deployment: Mapping[str, Any] | None) -> Obj:
    out: Obj = {}
    if result.configmap is not None:
        out["configMapName"] = result.configmap["metadata"]["name"]
        out["configVersion"] = result.version
    if result.mode:
        out["sidecarMode"] = result.mode
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


def _injection_event(
    before: tuple[str, Obj] | None, proxy: Mapping[str, Any], result: Plan, target: str
) -> tuple[str, str]:
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
    if patches.covers(current, {"data": wanted["data"], "metadata": {"labels": meta["labels"]}}):
        return None
    patch = {"data": wanted["data"], "metadata": {"labels": meta["labels"]}}
    if "ownerReferences" in meta:
        patch["metadata"]["ownerReferences"] = meta["ownerReferences"]
    await api.request("PATCH", path, patch, kube.MERGE_PATCH)
    return "updated"


async def write_status(
    api: Kube, proxy: Mapping[str, Any], facts: list[Fact], fields: Mapping[str, Any]
) -> None:
    """Merge facts into the conditions and write status, only when something changed. A None
    among `fields` (at any depth) removes that field, as in a merge patch."""
    meta = proxy["metadata"]
    current = dict(proxy.get("status") or {})
    generation = meta.get("generation")
    conditions = merge(current.get("conditions") or [], facts, generation, now())
    wanted = {**current, **fields, "conditions": conditions}
    if generation is not None:
        wanted["observedGeneration"] = generation
    same = _without_nulls({k: v for k, v in wanted.items() if k != "conditions"}) == {
        k: v for k, v in current.items() if k != "conditions"
    } and without_times(conditions) == without_times(current.get("conditions") or [])
    if same:
        return
    await api.request(
        "PATCH",
        kube.proxy_path(meta["namespace"], meta["name"]) + "/status",
        {"status": wanted},
        kube.MERGE_PATCH,
    )


def _without_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def post(
    memo: kopf.Memo,
    proxy: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    once: bool = False,
) -> None:
    """An Event on the EmbeddingProxy; with `once`, only when it is news (warnings would
    otherwise repeat on every Deployment event)."""
    if once:
        key = (proxy["metadata"]["namespace"], proxy["metadata"]["name"])
        seen: set[tuple[str, str]] = memo.notices.setdefault(key, set())
        if (reason, message) in seen:
            return
        seen.add((reason, message))
    kopf.event(dict(proxy), type=type_, reason=reason, message=message)


# ---- deletion and retargeting ---------------------------------------------------------------


@kopf.on.delete(names.GROUP, names.VERSION, names.PLURAL)
async def release(
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    body: kopf.Body,
    memo: kopf.Memo,
    logger: logging.Logger,
    retry: int,
    **_: Any,
) -> None:
    target = (spec.get("targetRef") or {}).get("name")
    try:
        async with lock(memo, namespace, name):
            if target:
                await release_target(memo, namespace, name, target, logger)
            await client(memo).delete(kube.configmap_path(namespace, names.configmap_name(name)))
    except ApiError as e:
        delay = retry_delay(retry, memo.options.max_retry_seconds)
        raise kopf.TemporaryError(f"Kubernetes API: {e}; retrying in {delay:.0f} s", delay) from e
    memo.metrics.forget(namespace, name)
    memo.notices.pop((namespace, name), None)
    memo.locks.pop((namespace, name), None)
    memo.wakeups.pop((namespace, name), None)


async def release_target(
    memo: kopf.Memo, namespace: str, name: str, target: str, logger: logging.Logger
) -> None:
    """Take the sidecar out of a Deployment this EmbeddingProxy injected (only that one)."""
    api = client(memo)
    path = kube.deployment_path(namespace, target)

    async def remove() -> None:
        deployment = await api.get(path)
        if deployment is None:
            return
        owner = patches.owner_of(deployment)
        if owner is not None and owner != name:
            return
        if owner is None and patches.find_sidecar(deployment) is None:
            return
        ops = patches.remove_ops(deployment)
        if ops:
            await api.request("PATCH", path, ops, kube.JSON_PATCH)
            logger.info("removed the sidecar from Deployment %s/%s", namespace, target)

    await kube.retrying(
        remove,
        what=f"removing the sidecar from Deployment {namespace}/{target}",
        logger=logger,
        max_delay=memo.options.max_retry_seconds,
        attempts=PATCH_ATTEMPTS,
    )


# ---- observing the pods ---------------------------------------------------------------------


@kopf.daemon(names.GROUP, names.VERSION, names.PLURAL, cancellation_timeout=5.0)
async def observe(
    stopped: kopf.DaemonStopped,
    namespace: str,
    name: str,
    memo: kopf.Memo,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """Ask the ready pods' proxies which config they run and how much work they hold; count them
    into status, and autoscale."""
    first = True
    wake = wakeup(memo, namespace, name)
    while not stopped:
        interval = memo.options.status_seconds
        wake.clear()
        try:
            interval = await observe_once(memo, namespace, name, logger, first) or interval
            first = False
        except ApiError as e:
            memo.metrics.failed(namespace, name)
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
    memo: kopf.Memo, namespace: str, name: str, logger: logging.Logger, first: bool = False
) -> float | None:
    api = client(memo)
    proxy = await api.get(kube.proxy_path(namespace, name))
    if proxy is None or proxy["metadata"].get("deletionTimestamp"):
        return None
    target = ((proxy.get("spec") or {}).get("targetRef") or {}).get("name", "")
    deployment = await api.get(kube.deployment_path(namespace, target)) if target else None
    if deployment is None:
        return None
    try:
        spec = parse(proxy.get("spec") or {})
    except SpecError:
        return None
    version = render.proxy_config(spec)["version"]
    selector = (deployment.get("spec") or {}).get("selector") or {}
    listing = await api.request(
        "GET", kube.pods_path(namespace), params={"labelSelector": pods.selector_query(selector)}
    )
    items = listing.get("items") or []
    ready = pods.proxy_pods(items, selector)
    texts = await scrape_all(memo, [pods.metrics_url(p, spec.sidecar.ports.metrics) for p in ready])
    pages = [scrape.parse_metrics(t) if t is not None else scrape.ProxyReading() for t in texts]
    current = sum(1 for page in pages if page.config_version == version)
    readings = {
        p["metadata"]["name"]: page.queue_depth_avg for p, page in zip(ready, pages, strict=True)
    }
    fact, scaling = await autoscale(
        memo, proxy, spec, pods.live_pods(items, selector), readings, first, logger
    )
    load = memo.metrics.observe(
        namespace,
        name,
        deployment,
        spec.autoscaling,
        fact.reason,
        scaling,
        metrics.pod_readings(ready, texts, pages, version),
    )
    async with lock(memo, namespace, name):
        fresh = await api.get(kube.proxy_path(namespace, name))
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return None
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
        facts = [config_fact(len(ready), current, version), fact]
        await write_status(api, fresh, facts, fields)
    if spec.autoscaling.enabled:
        return float(spec.autoscaling.poll_seconds)
    return None


# ---- autoscaling ----------------------------------------------------------------------------


async def autoscale(
    memo: kopf.Memo,
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
    api = client(memo)
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
        await list_if_served(api, kube.hpa_path(namespace)),
        await list_if_served(api, kube.scaledobject_path(namespace)),
        target,
        ours,
        uid,
    )
    if conflict is not None:
        message = conflict.message(target)
        post(memo, proxy, "Warning", "ConflictingAutoscaler", message, once=True)
        if with_keda:
            await remove_scaled_object(api, namespace, ours, uid, logger)
        fields = {"scaleTargetName": target, "lastScaleTime": status.get("lastScaleTime")}
        return Fact(names.AUTOSCALING, "False", "ConflictingAutoscaler", message), fields
    if with_keda:
        return await write_scaled_object(memo, proxy, spec)
    return await scale_builtin(memo, proxy, spec, live, readings, logger)


async def scale_builtin(
    memo: kopf.Memo,
    proxy: Mapping[str, Any],
    spec: ProxySpec,
    live: list[Obj],
    readings: dict[str, float | None],
    logger: logging.Logger,
) -> tuple[Fact, Obj]:
    api = client(memo)
    namespace = proxy["metadata"]["namespace"]
    status = (proxy.get("status") or {}).get("autoscaling") or {}
    target = spec.scale_target_name
    path = kube.scale_path(namespace, target)
    scale = await api.get(path)
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
            post(memo, proxy, "Warning", "FailedScale", message, once=True)
        else:
            last = scaling_status.timestamp(clock)
            post(memo, proxy, "Normal", *event)
            logger.info(event[1])
    return fact, scaling_status.decision_status(decision, target, history, last)


async def write_scaled_object(
    memo: kopf.Memo, proxy: Mapping[str, Any], spec: ProxySpec
) -> tuple[Fact, Obj]:
    """Create our ScaledObject, or bring it back to what the spec says."""
    api = client(memo)
    meta = proxy["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid")
    wanted = keda.scaled_object(name, namespace, uid, spec)
    ours, target = wanted["metadata"]["name"], spec.scale_target_name
    fields = {"scaleTargetName": target, "scaledObjectName": ours}
    current = await api.get(kube.scaledobject_path(namespace, ours))
    try:
        if current is None:
            await api.request("POST", kube.scaledobject_path(namespace), wanted)
            post(memo, proxy, "Normal", "ScaledObjectCreated", f"created ScaledObject {ours!r}")
        elif not keda.owned_by(current, uid):
            message = f"ScaledObject {ours!r} exists and is not this EmbeddingProxy's"
            post(memo, proxy, "Warning", "ConflictingAutoscaler", message, once=True)
            fields = {"scaleTargetName": target}
            return Fact(names.AUTOSCALING, "False", "ConflictingAutoscaler", message), fields
        else:
            patch = {"metadata": {"labels": wanted["metadata"]["labels"]}, "spec": wanted["spec"]}
            if not patches.covers(current, patch):
                patch["metadata"]["ownerReferences"] = wanted["metadata"]["ownerReferences"]
                await api.request(
                    "PATCH", kube.scaledobject_path(namespace, ours), patch, kube.MERGE_PATCH
                )
                post(memo, proxy, "Normal", "ScaledObjectUpdated", f"updated ScaledObject {ours!r}")
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
        post(memo, proxy, "Warning", "ScaledObjectRefused", message, once=True)
        return Fact(names.AUTOSCALING, "False", "ScaledObjectRefused", message), {
            "scaleTargetName": target
        }
    server = spec.autoscaling.keda.server_address
    return scaling_status.keda_fact(ours, target, server), fields


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


async def list_if_served(api: Kube, path: str) -> list[Obj]:
    """The items of a list; none when the API is not served (KEDA not installed)."""
    try:
        return list((await api.request("GET", path)).get("items") or [])
    except ApiError as e:
        if e.status == 404:
            return []
        raise


async def scrape_all(memo: kopf.Memo, urls: list[str]) -> list[str | None]:
    """GET each proxy's /metrics at once; None for a pod that did not answer in time. A session
    of its own: the API credentials are never sent to pods."""
    if memo.scraper is None:
        memo.scraper = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=memo.options.scrape_timeout_seconds)
        )
    session: aiohttp.ClientSession = memo.scraper

    async def one(url: str) -> str | None:
        try:
            async with session.get(url) as resp:
                return await resp.text() if resp.status == 200 else None
        except (TimeoutError, aiohttp.ClientError):
            return None

    return list(await asyncio.gather(*(one(u) for u in urls)))
