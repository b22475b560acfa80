"""Two replicas as the chart runs them (same arguments, own pod names) meet at the peering
object: exactly one acts, the other stands by, and takes over when the first one goes."""

from __future__ import annotations

import asyncio
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from harness import eventually, write_kubeconfig
from installed import ChartCluster, TestApi, install, start, stop
from tests.helpers.processes import free_port

from embedding_proxy_operator import names
from embedding_proxy_operator.cli import peer_priority

NS = "demo"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
PROXIES = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NS}/{names.PLURAL}"
CONFIGMAP = f"/api/v1/namespaces/{NS}/configmaps/{names.configmap_name('tei')}"
# Two pods of one ReplicaSet.
PODS = ["embedding-proxy-5d8c7b9f4-x2kq7", "embedding-proxy-5d8c7b9f4-m8r4t"]

RESUMED = "Resuming operations after the pause"
CONFLICT = "Possibly conflicting operators"
ACTED = "Handler 'reconcile_proxy' succeeded"
# kopf starts paused and logs this when it starts serving EmbeddingProxies.
WATCHING = "Resuming the watch-stream for embeddingproxies"

Obj = dict[str, Any]


class Replica:
    def __init__(self, pod: str, log: Path, health_port: int, probe_path: str) -> None:
        self.pod, self.log, self.probe = pod, log, f"http://127.0.0.1:{health_port}{probe_path}"
        self.proc: subprocess.Popen[bytes] | None = None

    def text(self, since: int = 0) -> str:
        return self.log.read_text(errors="replace")[since:]

    def alive(self) -> bool:
        """What the kubelet's liveness probe sees."""
        try:
            with urllib.request.urlopen(self.probe, timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False


def tei_deployment() -> Obj:
    labels = {"app": "tei"}
    container = {"name": "tei", "image": "tei", "ports": [{"containerPort": 80}]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "tei", "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


async def max_batch_size(api: TestApi) -> int | None:
    cm = await api.get(CONFIGMAP)
    if not cm:
        return None
    return int(yaml.safe_load(cm["data"][names.CONFIG_KEY])["batching"]["max_batch_size"])


async def test_one_replica_acts_and_the_other_takes_over(
    chart_cluster: ChartCluster, chart_api: TestApi, tmp_path: Path
) -> None:
    cluster, api = chart_cluster, chart_api
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(cluster.url))
    # Rendered first: the emulator shares this event loop, so nothing may block it later.
    charts = [install(free_port(), "--set", "operator.replicas=2") for _ in PODS]
    peering = next(a.split("=", 1)[1] for a in charts[0].args if a.startswith("--peering="))
    cluster.add_cluster_peering(peering)
    replicas = [
        Replica(pod, tmp_path / f"{pod}.log", chart.health_port, chart.probe_path)
        for pod, chart in zip(PODS, charts, strict=True)
    ]
    # The higher priority starts first, so that the other one finds it in its first listing of
    # the peering object (kopf starts paused, and stays so silently when it sees a better peer).
    active, standby = sorted(replicas, key=lambda r: peer_priority(r.pod), reverse=True)
    chart_of = dict(zip(PODS, charts, strict=True))
    try:
        for replica in (active, standby):
            chart = chart_of[replica.pod]
            env = {**chart.env, "POD_ID": replica.pod}
            replica.proc = start(chart.args, kubeconfig, replica.log, env)
            # Each peer records itself with the priority derived from its pod name.
            await eventually(
                lambda r=replica: _recorded(cluster, peering, r.pod), f"{replica.pod} peering"
            )
            if replica is active:
                await eventually(lambda: _has(active, WATCHING), "the first replica to act")
        alive = [await asyncio.to_thread(r.alive) for r in replicas]
        assert alive == [True, True], "a liveness probe failed"

        await api.create(DEPLOYMENTS, tei_deployment())
        await api.create(
            PROXIES,
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "metadata": {"name": "tei", "namespace": NS},
                "spec": {"targetRef": {"name": "tei"}},
            },
        )
        assert await eventually(lambda: max_batch_size(api), "the ConfigMap") == 32
        # The log line follows the write: wait for it rather than race it.
        await eventually(lambda: _has(active, ACTED), "the active replica's handler")
        assert ACTED not in standby.text() and WATCHING not in standby.text()

        # The active one goes (a rollout, a node drain): it takes itself out of the peering
        # object, and the standby takes over at once.
        mark = len(standby.text())
        assert active.proc is not None and await stop(active.proc) == 0
        await eventually(lambda: _has(standby, RESUMED, mark), "the standby to resume")
        await api.merge(f"{PROXIES}/tei", {"spec": {"batching": {"maxBatchSize": 8}}})

        async def rewritten() -> bool:
            return await max_batch_size(api) == 8

        await eventually(rewritten, "the change applied by the former standby")
        await eventually(lambda: _has(standby, ACTED, mark), "the former standby's handler")
    finally:
        for r in replicas:
            code = await stop(r.proc) if r.proc else None
            print(f"---- {r.pod} (exit {code}) ----\n{r.text()[-10000:]}")
    for r in replicas:
        assert CONFLICT not in r.text(), f"{r.pod}: peers with equal priorities"
        assert "Traceback" not in r.text(), f"{r.pod} logged an unhandled exception"


async def _has(replica: Replica, words: str, since: int = 0) -> bool:
    return words in replica.text(since)


async def _recorded(cluster: ChartCluster, peering: str, pod: str) -> bool:
    status = cluster.peering_status(peering)
    return (status.get(pod) or {}).get("priority") == peer_priority(pod)
