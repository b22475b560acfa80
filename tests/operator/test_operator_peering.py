"""Two replicas as the chart runs them (same arguments, own pod names) meet at the peering
object on the real API server: exactly one acts, the other stands by, and takes over when the
first one goes."""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from harness import Api, Operators, Paths, embedding_proxy, eventually, stop, tei_deployment
from installed import Account
from tests.helpers.processes import free_port

from embedding_proxy_operator.cli import peer_priority
from embedding_proxy_operator.model import names

# Two pods of one ReplicaSet.
PODS = ["embedding-proxy-5d8c7b9f4-x2kq7", "embedding-proxy-5d8c7b9f4-m8r4t"]

RESUMED = "Resuming operations after the pause"
CONFLICT = "Possibly conflicting operators"
ACTED = "Handler 'reconcile_proxy' succeeded"
# kopf starts paused and logs this when it starts serving EmbeddingProxies.
WATCHING = "Resuming the watch-stream for embeddingproxies"

Obj = dict[str, Any]


@dataclass
class Replica:
    pod: str
    health_port: int
    probe_path: str
    log: Path | None = None

    def text(self, since: int = 0) -> str:
        return self.log.read_text(errors="replace")[since:] if self.log else ""

    def alive(self) -> bool:
        """What the kubelet's liveness probe sees."""
        url = f"http://127.0.0.1:{self.health_port}{self.probe_path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False


async def max_batch_size(api: Api, paths: Paths) -> int | None:
    cm = await api.get(f"{paths.configmaps}/{names.configmap_name('tei')}")
    if not cm:
        return None
    return int(yaml.safe_load(cm["data"][names.CONFIG_KEY])["batching"]["max_batch_size"])


async def test_one_replica_acts_and_the_other_takes_over(
    cluster_account: Account, api: Api, paths: Paths, operator: Operators
) -> None:
    peering = f"/apis/kopf.dev/v1/clusterkopfpeerings/{cluster_account.peering}"
    replicas = [Replica(pod, free_port(), cluster_account.probe_path) for pod in PODS]
    # The higher priority starts first, so that the other one finds it in its first listing of
    # the peering object (kopf starts paused, and stays so silently when it sees a better peer).
    active, standby = sorted(replicas, key=lambda r: peer_priority(r.pod), reverse=True)
    procs = {}
    for replica in (active, standby):
        procs[replica.pod] = operator(health_port=replica.health_port, POD_ID=replica.pod)
        replica.log = operator.started[-1][1]

        # Each peer records itself with the priority derived from its pod name.
        async def recorded(pod: str = replica.pod) -> bool:
            status = (await api.get(peering) or {}).get("status") or {}
            return (status.get(pod) or {}).get("priority") == peer_priority(pod)

        await eventually(recorded, f"{replica.pod} in the peering object")
        if replica is active:
            await eventually(lambda: _has(active, WATCHING), "the first replica to act")
    alive = [await asyncio.to_thread(r.alive) for r in replicas]
    assert alive == [True, True], "a liveness probe failed"

    await api.create(paths.deployments, tei_deployment(paths.ns))
    await api.create(paths.proxies, embedding_proxy(paths.ns))
    assert await eventually(lambda: max_batch_size(api, paths), "the ConfigMap") == 32
    # The log line follows the write: wait for it rather than race it.
    await eventually(lambda: _has(active, ACTED), "the active replica's handler")
    assert ACTED not in standby.text() and WATCHING not in standby.text()

    # The active one goes (a rollout, a node drain): it takes itself out of the peering object,
    # and the standby takes over at once.
    mark = len(standby.text())
    assert await stop(procs[active.pod]) == 0
    await eventually(lambda: _has(standby, RESUMED, mark), "the standby to resume")
    await api.merge(f"{paths.proxies}/tei", {"spec": {"batching": {"maxBatchSize": 8}}})

    async def rewritten() -> bool:
        return await max_batch_size(api, paths) == 8

    await eventually(rewritten, "the change applied by the former standby")
    await eventually(lambda: _has(standby, ACTED, mark), "the former standby's handler")
    for r in replicas:
        assert CONFLICT not in r.text(), f"{r.pod}: peers with equal priorities"


async def _has(replica: Replica, words: str, since: int = 0) -> bool:
    return words in replica.text(since)
