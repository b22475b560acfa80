"""Autoscaling end to end: the operator as its own process against the real API server, real
proxy processes standing in for the TEI pods (each pod's IP is a loopback address of its own,
where a proxy listens on the sidecar's ports), a slow simulated TEI behind them, and a load
generator of many single-input callers. The controller-manager makes the ReplicaSets and pods the
Deployment's scale asks for; the test plays the kubelet (binds them, reports them ready at those
addresses, finishes the ones deleted)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from harness import Api, Kubelet, Paths, eventually, stop_process
from installed import Account, grants_used
from tests.helpers.control_plane import ControlPlane
from tests.helpers.external_schemas import SCALED_OBJECT
from tests.helpers.processes import free_port, wait_http

from embedding_proxy_operator.model import names

POLL = 1  # spec.autoscaling.pollSeconds
WINDOW = 5  # the scale-down stabilization window, seconds
TARGET = 20  # targetQueueDepthPerPod
MAX = 4  # maxReplicas; one proxy process per possible pod
CALLERS = 160  # concurrent single-input callers: 8 x the target on one pod, 2 x on four
IPS = [f"127.0.0.{2 + i}" for i in range(MAX)]

# What the chart grants the autoscaler (group, resource, verb); the operator must need no more.
ALLOWED = {
    ("apps", "deployments/scale", "get"),
    ("apps", "deployments/scale", "patch"),
    ("autoscaling", "horizontalpodautoscalers", "list"),
    *{("keda.sh", "scaledobjects", v) for v in ("get", "list", "create", "patch", "delete")},
    ("", "events", "create"),
    ("", "pods", "list"),
}
WATCHED = {"deployments/scale", "horizontalpodautoscalers", "scaledobjects", "events", "pods"}

Obj = dict[str, Any]


# ---- processes -------------------------------------------------------------------------------


@dataclass
class Fleet:
    """A simulated TEI and one proxy per possible pod, each on its pod's IP."""

    api_port: int
    metrics_port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    sim_port, api_port, metrics_port = free_port(), free_port(), free_port()
    # One pass at a time, 200 ms each: a queue builds at once under the load below.
    sim = spawn(
        [
            sys.executable,
            "-m",
            "embedding_proxy.simulator",
            "--port",
            str(sim_port),
            "--base-ms",
            "200",
            "--no-internal-batching",
        ],
        tmp_path / "tei.log",
    )
    out = Fleet(api_port, metrics_port, [sim])
    try:
        for ip in IPS:
            args = [
                sys.executable,
                "-m",
                "embedding_proxy.cli",
                "serve",
                "--host",
                ip,
                "--port",
                str(api_port),
                "--metrics-port",
                str(metrics_port),
                "--upstream",
                f"http://127.0.0.1:{sim_port}",
                "--max-batch-size",
                "8",
            ]
            out.procs.append(spawn(args, tmp_path / f"proxy-{ip}.log"))
        wait_http(f"http://127.0.0.1:{sim_port}/health", proc=sim)
        for ip, proc in zip(IPS, out.procs[1:], strict=True):
            wait_http(f"http://{ip}:{metrics_port}/metrics", proc=proc)
            wait_http(f"http://{ip}:{api_port}/health", proc=proc)
        yield out
    finally:
        for proc in out.procs:
            stop_process(proc)


# ---- objects ---------------------------------------------------------------------------------


def tei_deployment(ns: str, replicas: int) -> Obj:
    labels = {"app": "tei"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "tei", "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "tei", "image": "tei", "ports": []}]},
            },
        },
    }


def embedding_proxy(ns: str, api_port: int, metrics_port: int, **autoscaling: Any) -> Obj:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "tei", "namespace": ns},
        "spec": {
            "targetRef": {"name": "tei"},
            # Every proxy binds these on its own IP, as every pod has its own network namespace.
            "sidecar": {"ports": {"api": api_port, "metrics": metrics_port}},
            "autoscaling": {"enabled": True, "pollSeconds": POLL, **autoscaling},
        },
    }


def hpa(ns: str, name: str, target: str = "tei", owner: Obj | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": ns}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": 1,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
        },
    }


# ---- the test's side of the cluster ----------------------------------------------------------


async def replicas(api: Api, paths: Paths) -> int:
    dep = await api.get(f"{paths.deployments}/tei")
    return int((dep or {}).get("spec", {}).get("replicas", 0))


async def proxy_status(api: Api, paths: Paths) -> Obj:
    return (await api.get(f"{paths.proxies}/tei") or {}).get("status") or {}


def condition(status: Obj, type_: str) -> Obj:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


async def events(api: Api, paths: Paths, reason: str) -> list[Obj]:
    return [e for e in await api.items(paths.events) if e.get("reason") == reason]


async def follow_endpoints(api: Api, paths: Paths, endpoints: list[str]) -> None:
    """`endpoints` follows the ready pods' addresses, as a Service's endpoints do."""
    while True:
        ready = []
        for pod in await api.items(paths.pods):
            status = pod.get("status") or {}
            ok = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in status.get("conditions") or []
            )
            if ok and not pod["metadata"].get("deletionTimestamp") and status.get("podIP"):
                ready.append(status["podIP"])
        endpoints[:] = sorted(ready)
        await asyncio.sleep(0.1)


@dataclass
class Load:
    answered: int = 0
    failed: int = 0


async def generate_load(endpoints: list[str], port: int, load: Load) -> None:
    """CALLERS callers, each sending one input at a time to the next endpoint in turn."""
    turn = itertools.count()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def caller(i: int) -> None:
            while True:
                if not endpoints:
                    await asyncio.sleep(0.05)
                    continue
                ip = endpoints[next(turn) % len(endpoints)]
                try:
                    body = {"inputs": f"caller {i} says hello"}
                    async with http.post(f"http://{ip}:{port}/embed", json=body) as resp:
                        await resp.read()
                    load.answered += resp.status == 200
                    load.failed += resp.status != 200
                except (aiohttp.ClientError, TimeoutError):
                    load.failed += 1
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(caller(i) for i in range(CALLERS)))


def check_api_use(cluster: ControlPlane, account: Account, paths: Paths) -> None:
    """In the test's namespace the operator used only the verbs the autoscaler is granted, and
    changed replicas only through the scale subresource."""
    events = [
        e
        for e in cluster.audit_events(account.username)
        if (e.get("objectRef") or {}).get("namespace") == paths.ns
    ]
    used = grants_used(events)
    for (group, resource, verb), example in used.items():
        if resource in WATCHED:
            assert (group, resource, verb) in ALLOWED, example
    assert ("apps", "deployments", "update") not in used


# ---- the tests -------------------------------------------------------------------------------


async def test_queue_depth_scales_tei_up_at_once_and_down_after_the_window(
    cluster: ControlPlane,
    cluster_account: Account,
    api: Api,
    paths: Paths,
    operator: Any,
    kubelet: Callable[[list[str]], Kubelet],
    fleet: Fleet,
) -> None:
    await api.create(paths.deployments, tei_deployment(paths.ns, 1))
    operator()
    spec = embedding_proxy(
        paths.ns,
        fleet.api_port,
        fleet.metrics_port,
        minReplicas=1,
        maxReplicas=MAX,
        targetQueueDepthPerPod=TARGET,
        behavior={"scaleDown": {"stabilizationWindowSeconds": WINDOW}},
    )
    await api.create(paths.proxies, spec)
    kubelet(IPS)
    endpoints: list[str] = []
    service = asyncio.create_task(follow_endpoints(api, paths, endpoints))
    load = Load()
    traffic: asyncio.Task[None] | None = None
    try:
        # Idle: the autoscaler runs and keeps the one replica.
        async def idle() -> Obj | None:
            status = await proxy_status(api, paths)
            auto = status.get("autoscaling") or {}
            ok = auto.get("desiredReplicas") == 1 and auto.get("podsMeasured") == 1
            return status if ok else None

        status = await eventually(idle, "the autoscaler measuring the idle pod", timeout=60)
        assert condition(status, names.AUTOSCALING)["status"] == "True"
        assert status["autoscaling"]["observedQueueDepth"] == 0

        # Overload: CALLERS inputs held on one pod, 8 x the target.
        started = time.monotonic()
        traffic = asyncio.create_task(generate_load(endpoints, fleet.api_port, load))

        async def scaled_up() -> int | None:
            n = await replicas(api, paths)
            return n if n > 1 else None

        # Two polls, plus the moment the proxy's 10 s average needs to leave the tolerance band;
        # how long it took is a figure printed, not asserted (the machine may be busy).
        await eventually(scaled_up, "a scale-up", timeout=60)
        scale_up_seconds = time.monotonic() - started

        async def at_maximum() -> Obj | None:
            status = await proxy_status(api, paths)
            ok = condition(status, names.AUTOSCALING).get("reason") == "AtMaximum"
            current = (status.get("autoscaling") or {}).get("currentReplicas")
            return status if ok and current == MAX else None

        status = await eventually(at_maximum, f"{MAX} replicas, at the maximum", timeout=60)
        auto = status["autoscaling"]
        assert auto["desiredReplicas"] == MAX and auto["currentReplicas"] == MAX
        # At the maximum because the load asks for MAX or more: ceil(depth / TARGET) >= MAX.
        assert auto["observedQueueDepth"] >= (MAX - 1) * TARGET
        assert auto["podsMeasured"] == MAX
        assert auto["scaleTargetName"] == "tei" and auto["lastScaleTime"]
        ups = await eventually(lambda: events(api, paths, "ScaledUp"), "a ScaledUp event")
        # Events are listed by name, not by time: the first scale-up is the one from 1.
        (first,) = [e for e in ups if e["message"].startswith("scaled tei from 1 to ")]
        assert "queue depth" in first["message"] and f"target {TARGET}" in first["message"]
        assert first["involvedObject"]["kind"] == names.KIND
        assert load.answered > 0

        # A steady overload holds the maximum, without a flap.
        for _ in range(30):
            assert await replicas(api, paths) == MAX
            await asyncio.sleep(0.1)

        # The load stops; the 10 s averages drain, and the replicas follow a window behind.
        traffic.cancel()
        stopped = time.monotonic()
        seen: dict[int, int] = {}  # every recommendation the status showed: time (ms) -> count
        while True:
            status = await proxy_status(api, paths)
            history = (status.get("autoscaling") or {}).get("history") or {}
            for rec in history.get("recommendations") or []:
                seen[rec["atUnixMilliseconds"]] = rec["replicas"]
            if await replicas(api, paths) < MAX:
                break
            assert time.monotonic() - stopped < 90, "no scale-down within 90 s of the load stopping"
            await asyncio.sleep(0.1)
        dropped = time.monotonic()
        assert dropped - stopped >= WINDOW, "scaled down before the window had passed"

        async def scale_down_recorded() -> int | None:
            history = ((await proxy_status(api, paths)).get("autoscaling") or {}).get(
                "history"
            ) or {}
            for rec in history.get("recommendations") or []:
                seen[rec["atUnixMilliseconds"]] = rec["replicas"]
            downs = history.get("scaleDowns") or []
            return downs[0]["atUnixMilliseconds"] if downs else None

        scaled_down_at = await eventually(scale_down_recorded, "the scale-down in status")
        # Not before the window: the last recommendation for MAX left it, then it went.
        last_high = max(at for at, n in seen.items() if n >= MAX and at < scaled_down_at)
        assert scaled_down_at - last_high >= WINDOW * 1000 - 1

        async def back_to_one() -> bool:
            return await replicas(api, paths) == 1

        await eventually(back_to_one, "one replica again", timeout=60)
        downs = await eventually(lambda: events(api, paths, "ScaledDown"), "a ScaledDown event")
        assert any(e["message"].startswith(f"scaled tei from {MAX} to ") for e in downs)
        check_api_use(cluster, cluster_account, paths)
        print(f"scaled up {scale_up_seconds:.1f} s after the load started; first scale-down")
        print(f"{dropped - stopped:.1f} s after it stopped; {load.answered} inputs answered")
    finally:
        for task in (traffic, service):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (traffic, service) if t), return_exceptions=True)


async def test_an_hpa_on_the_same_deployment_makes_the_operator_stand_back(
    cluster: ControlPlane, cluster_account: Account, api: Api, paths: Paths, operator: Any
) -> None:
    """3 replicas above maxReplicas 2 would be scaled at once, without any metric; an HPA on
    the Deployment stops that until it is gone."""
    await api.create(paths.deployments, tei_deployment(paths.ns, 3))
    await api.create(paths.hpas, hpa(paths.ns, "tei-cpu"))
    await api.create(paths.hpas, hpa(paths.ns, "web-cpu", target="web"))
    operator()
    spec = embedding_proxy(paths.ns, free_port(), free_port(), maxReplicas=2)
    await api.create(paths.proxies, spec)

    async def standing_back() -> Obj | None:
        cond = condition(await proxy_status(api, paths), names.AUTOSCALING)
        return cond if cond.get("reason") == "ConflictingAutoscaler" else None

    cond = await eventually(standing_back, "the ConflictingAutoscaler condition")
    assert cond["status"] == "False"
    assert "HorizontalPodAutoscaler 'tei-cpu'" in cond["message"] and "'tei'" in cond["message"]
    (warning, *_) = await eventually(
        lambda: events(api, paths, "ConflictingAutoscaler"), "a ConflictingAutoscaler event"
    )
    assert warning["type"] == "Warning"
    await asyncio.sleep(3 * POLL)
    assert await replicas(api, paths) == 3
    assert (await proxy_status(api, paths))["autoscaling"] == {"scaleTargetName": "tei"}

    await api.delete(f"{paths.hpas}/tei-cpu")

    async def taken_over() -> int | None:
        n = await replicas(api, paths)
        return n if n == 2 else None

    await eventually(taken_over, "the operator scaling once the HPA is gone")

    async def at_maximum() -> Obj | None:
        cond = condition(await proxy_status(api, paths), names.AUTOSCALING)
        return cond if (cond.get("status"), cond.get("reason")) == ("True", "AtMaximum") else None

    await eventually(at_maximum, "Autoscaling=True, reason AtMaximum")
    assert await events(api, paths, "ScaledDown")
    check_api_use(cluster, cluster_account, paths)


async def test_keda_provider_writes_an_owned_scaled_object_that_goes_with_it(
    cluster: ControlPlane, cluster_account: Account, api: Api, paths: Paths, operator: Any
) -> None:
    await api.create(paths.deployments, tei_deployment(paths.ns, 2))
    operator()
    spec = embedding_proxy(paths.ns, free_port(), free_port(), provider="KEDA", maxReplicas=6)
    created = await api.create(paths.proxies, spec)
    name = names.scaled_object_name("tei")

    async def written() -> Obj | None:
        return await api.get(f"{paths.scaled_objects}/{name}")

    scaled = await eventually(written, "the ScaledObject")
    jsonschema.validate(scaled, SCALED_OBJECT)
    (owner,) = scaled["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == (names.KIND, created["metadata"]["uid"])
    assert scaled["spec"]["scaleTargetRef"]["name"] == "tei"
    assert scaled["spec"]["maxReplicaCount"] == 6
    (trigger,) = scaled["spec"]["triggers"]
    assert f'namespace="{paths.ns}"' in trigger["metadata"]["query"]

    async def delegated() -> Obj | None:
        status = await proxy_status(api, paths)
        ok = condition(status, names.AUTOSCALING).get("reason") == "KEDA"
        return status if ok else None

    status = await eventually(delegated, "Autoscaling=True, reason KEDA")
    assert status["autoscaling"] == {"scaleTargetName": "tei", "scaledObjectName": name}
    # The HPA KEDA makes for it is ours too: no conflict.
    await api.create(paths.hpas, hpa(paths.ns, f"keda-hpa-{name}", owner=scaled))
    await api.merge(f"{paths.proxies}/tei", {"spec": {"autoscaling": {"maxReplicas": 8}}})

    async def updated() -> Obj | None:
        obj = await api.get(f"{paths.scaled_objects}/{name}")
        return obj if obj and obj["spec"]["maxReplicaCount"] == 8 else None

    await eventually(updated, "the ScaledObject following the spec")
    assert condition(await proxy_status(api, paths), names.AUTOSCALING)["reason"] == "KEDA"
    assert await replicas(api, paths) == 2  # KEDA scales, not the operator

    await api.merge(f"{paths.proxies}/tei", {"spec": {"autoscaling": {"enabled": False}}})

    async def removed() -> bool:
        return await api.get(f"{paths.scaled_objects}/{name}") is None

    await eventually(removed, "the ScaledObject deleted")

    async def disabled() -> Obj | None:
        status = await proxy_status(api, paths)
        ok = condition(status, names.AUTOSCALING).get("reason") == "Disabled"
        return status if ok and "autoscaling" not in status else None

    await eventually(disabled, "Autoscaling=False, reason Disabled, and no autoscaling status")
    assert await replicas(api, paths) == 2

    # The garbage collector takes KEDA's HPA with the ScaledObject that owns it.
    async def hpa_collected() -> bool:
        return await api.get(f"{paths.hpas}/keda-hpa-{name}") is None

    await eventually(hpa_collected, "KEDA's HPA collected with its ScaledObject")

    # Switched on again, and then the EmbeddingProxy deleted: its ScaledObject goes with it, by
    # the garbage collector, as it would if the operator were not running at all.
    await api.merge(f"{paths.proxies}/tei", {"spec": {"autoscaling": {"enabled": True}}})
    await eventually(written, "the ScaledObject written again")
    await api.delete(f"{paths.proxies}/tei")
    await eventually(removed, "the ScaledObject collected with its EmbeddingProxy")
    deleted_by = [
        e["userAgent"]
        for e in cluster.audit_events()
        if e["verb"] == "delete"
        and e.get("stage") == "ResponseComplete"
        and e["requestURI"] == f"{paths.scaled_objects}/{name}"
    ]
    assert len(deleted_by) == 2 and "garbage-collector" in deleted_by[-1], deleted_by
    check_api_use(cluster, cluster_account, paths)


async def test_only_the_embedding_proxy_that_holds_a_deployment_scales_it(
    cluster: ControlPlane, cluster_account: Account, api: Api, paths: Paths, operator: Any
) -> None:
    """A second EmbeddingProxy whose autoscaling names a Deployment another one scales stands
    back, whether its own target is claimed by the first (before: it scaled the Deployment all
    the same) or it names it only as `scaleTargetRef` (before: the two fought over its scale)."""
    await api.create(paths.deployments, tei_deployment(paths.ns, 3))
    web = tei_deployment(paths.ns, 1)
    web["metadata"]["name"] = "web"
    await api.create(paths.deployments, web)
    operator()
    await api.create(
        paths.proxies, embedding_proxy(paths.ns, free_port(), free_port(), maxReplicas=2)
    )

    async def held() -> int | None:
        dep = await api.get(f"{paths.deployments}/tei") or {}
        claimed = (dep["metadata"].get("annotations") or {}).get(names.PROXY_ANNOTATION) == "tei"
        n = int(dep["spec"]["replicas"])
        return n if claimed and n == 2 else None

    await eventually(held, "the first EmbeddingProxy injecting and scaling tei to 2")
    claimant = embedding_proxy(paths.ns, free_port(), free_port(), minReplicas=4, maxReplicas=4)
    claimant["metadata"]["name"] = "claimant"
    rival = embedding_proxy(
        paths.ns, free_port(), free_port(), minReplicas=4, maxReplicas=4,
        scaleTargetRef={"name": "tei"},
    )  # fmt: skip
    rival["metadata"]["name"] = "rival"
    rival["spec"]["targetRef"]["name"] = "web"
    await api.create(paths.proxies, claimant)
    await api.create(paths.proxies, rival)

    async def autoscaling_of(name: str, reason: str) -> Obj | None:
        status = (await api.get(f"{paths.proxies}/{name}") or {}).get("status") or {}
        cond = condition(status, names.AUTOSCALING)
        return cond if cond.get("reason") == reason else None

    cond = await eventually(lambda: autoscaling_of("claimant", "TargetClaimed"), "claimant back")
    assert cond["status"] == "False" and "scales nothing" in cond["message"]
    cond = await eventually(
        lambda: autoscaling_of("rival", "ConflictingAutoscaler"), "the rival standing back"
    )
    assert "EmbeddingProxy 'tei' already scales Deployment 'tei'" in cond["message"]
    await asyncio.sleep(3 * POLL)
    assert await replicas(api, paths) == 2
    check_api_use(cluster, cluster_account, paths)
