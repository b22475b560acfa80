"""Exactly one replica acts, on the real API server: operator processes as the chart runs them
share its Lease, each with a token of its own, so that the audit log tells their requests apart
(`user.extra` names the token). The test stops, resumes, kills and terminates them, as a frozen
node, a crash and a rollout would, and the audit log shows who wrote what, and when.

Timings are short here (lease 4 s, renew deadline 3 s, retry 1 s); EMBEDDING_PROXY_TEST_LEASE
(`lease,deadline,retry`) runs the same with others, e.g. the defaults `15,10,2`, which is how
docs/operator.md's figures were measured (`pytest -s` prints them)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from harness import Api, Operators, Paths, embedding_proxy, eventually, stop, tei_deployment
from installed import Account
from tests.helpers.control_plane import ControlPlane
from tests.helpers.processes import free_port

from embedding_proxy_operator.io.leader import EXIT_LOST
from embedding_proxy_operator.model import names

Obj = dict[str, Any]
LEASE, DEADLINE, RETRY = (
    float(x) for x in os.environ.get("EMBEDDING_PROXY_TEST_LEASE", "4,3,1").split(",")
)
TIMING = {
    "EMBEDDING_PROXY_OPERATOR_LEASE_SECONDS": str(LEASE),
    "EMBEDDING_PROXY_OPERATOR_LEASE_RENEW_DEADLINE_SECONDS": str(DEADLINE),
    "EMBEDDING_PROXY_OPERATOR_LEASE_RETRY_SECONDS": str(RETRY),
}
# What a take-over may cost beyond the lease itself: a retry period with its jitter, and the
# start of kopf's watches on a slow, shared machine.
SLACK = 1.2 * RETRY + 10
STANDING_BY = "Standing by"
READS = {"get", "list", "watch"}


@dataclasses.dataclass
class Replica:
    pod: str
    proc: subprocess.Popen[bytes]
    log: Path
    token: str  # the token's id, as the audit log names it
    health_port: int

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        """What the kubelet's liveness probe sees."""
        try:
            url = f"http://127.0.0.1:{self.health_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False


def token_id(kubeconfig: Path) -> str:
    """The `jti` of the kubeconfig's token: the audit log's credential-id."""
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"JTI={claims['jti']}"


def start(
    operator: Operators, cluster: ControlPlane, account: Account, tmp: Path, pod: str
) -> Replica:
    """One replica: a pod of the chart's Deployment, with a token of its own."""
    n = len(operator.started)
    kubeconfig = cluster.token_kubeconfig(account.namespace, account.name, tmp / f"r{n}.kubeconfig")
    port = free_port()
    proc = operator(
        dataclasses.replace(account, kubeconfig=kubeconfig), health_port=port, POD_ID=pod, **TIMING
    )
    return Replica(pod, proc, operator.started[-1][1], token_id(kubeconfig), port)


async def holder(api: Api, account: Account) -> str:
    return str(((await api.get(account.lease_path) or {}).get("spec") or {}).get("holderIdentity"))


async def held_by(api: Api, account: Account, pod: str, timeout: float) -> float:
    """Seconds until `pod` holds the Lease."""
    began = time.monotonic()

    async def holds() -> bool:
        return await holder(api, account) == pod

    await eventually(holds, f"{pod} to hold the Lease", timeout=timeout)
    return time.monotonic() - began


def writes(
    cluster: ControlPlane, account: Account, replica: Replica, since: float = 0
) -> list[str]:
    """The writes the API server received from a replica (any resource), from `since` on
    (seconds since the epoch)."""
    out = []
    for e in cluster.audit_events(account.username):
        if e.get("stage") != "RequestReceived" or e.get("verb") in READS:
            continue
        if replica.token not in (e["user"].get("extra") or {}).get(
            "authentication.kubernetes.io/credential-id", []
        ):
            continue
        received = datetime.datetime.fromisoformat(e["requestReceivedTimestamp"]).timestamp()
        if received >= since:
            out.append(f"{e['verb']} {e['requestURI']}")
    return out


async def max_batch_size(api: Api, paths: Paths) -> int | None:
    cm = await api.get(f"{paths.configmaps}/{names.configmap_name('tei')}")
    if not cm:
        return None
    return int(yaml.safe_load(cm["data"][names.CONFIG_KEY])["batching"]["max_batch_size"])


async def retune(api: Api, paths: Paths, size: int) -> None:
    """Change the EmbeddingProxy and wait for the ConfigMap to follow."""
    await api.merge(f"{paths.proxies}/tei", {"spec": {"batching": {"maxBatchSize": size}}})

    async def applied() -> bool:
        return await max_batch_size(api, paths) == size

    await eventually(applied, f"maxBatchSize {size} in the ConfigMap", timeout=LEASE + SLACK)


async def exited(replica: Replica, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while replica.proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert replica.proc.poll() is not None, f"{replica.pod} still runs"
    return replica.proc.returncode


def done_with(operator: Operators, replica: Replica) -> None:
    """A replica this test ended itself: the fixture's clean-stop check is not for it."""
    print(f"---- {replica.log.name} ({replica.pod}, exit {replica.proc.returncode}) ----")
    print(replica.text()[-5000:])
    operator.started[:] = [s for s in operator.started if s[0] is not replica.proc]


async def test_one_leader_through_a_stall_a_crash_and_a_rollout(
    cluster: ControlPlane,
    cluster_account: Account,
    api: Api,
    paths: Paths,
    operator: Operators,
    tmp_path: Path,
) -> None:
    a = start(operator, cluster, cluster_account, tmp_path, "embedding-proxy-7d9f-aaaaa")
    await held_by(api, cluster_account, a.pod, timeout=60)
    b = start(operator, cluster, cluster_account, tmp_path, "embedding-proxy-7d9f-bbbbb")
    await eventually(lambda: _has(b, STANDING_BY), "the second replica to stand by", timeout=60)
    assert await asyncio.to_thread(b.alive), "a standby must answer its liveness probe"
    assert await asyncio.to_thread(a.alive)

    await api.create(paths.deployments, tei_deployment(paths.ns))
    await api.create(paths.proxies, embedding_proxy(paths.ns))
    assert await eventually(lambda: max_batch_size(api, paths), "the ConfigMap") == 32
    assert writes(cluster, cluster_account, b) == [], "the standby wrote"

    # A stall (SIGSTOP: a frozen node, a long pause): the standby takes over once the lease has
    # run out, and the stalled one, resumed, exits before it writes anything.
    os.kill(a.proc.pid, signal.SIGSTOP)
    stalled = time.time()
    took_stop = await held_by(api, cluster_account, b.pod, timeout=LEASE + SLACK)
    await retune(api, paths, 8)
    os.kill(a.proc.pid, signal.SIGCONT)
    assert await exited(a, timeout=10) == EXIT_LOST
    assert "no longer holds Lease" in a.text()
    # (A write it had sent just before it froze may arrive a moment later.)
    assert writes(cluster, cluster_account, a, since=stalled + 1) == []
    done_with(operator, a)

    # A crash (SIGKILL): the restarted container stands by until the lease runs out.
    c = start(operator, cluster, cluster_account, tmp_path, a.pod)
    await eventually(lambda: _has(c, STANDING_BY), "the restarted replica to stand by", timeout=60)
    os.kill(b.proc.pid, signal.SIGKILL)
    took_kill = await held_by(api, cluster_account, c.pod, timeout=LEASE + SLACK)
    killed = await exited(b, timeout=5)
    done_with(operator, b)
    await retune(api, paths, 16)

    # A rollout or a pod deleted (SIGTERM): the leader gives the Lease back as it goes.
    d = start(operator, cluster, cluster_account, tmp_path, b.pod)
    await eventually(lambda: _has(d, STANDING_BY), "the new standby", timeout=60)
    terminated = time.time()
    began = time.monotonic()
    assert await stop(c.proc) == 0
    await held_by(api, cluster_account, d.pod, timeout=1.2 * RETRY + SLACK)
    took_term = time.monotonic() - began  # from SIGTERM: the stop included
    assert "Gave Lease" in c.text()
    # What the leader wrote once told to stop: the Lease given back, nothing else.
    assert {w.split("?")[0] for w in writes(cluster, cluster_account, c, since=terminated)} == {
        "patch " + cluster_account.lease_path
    }
    await retune(api, paths, 24)
    print(
        f"lease {LEASE:g} s, renew deadline {DEADLINE:g} s, retry {RETRY:g} s: new holder "
        f"{took_stop:.1f} s after SIGSTOP, {took_kill:.1f} s after SIGKILL (exit {killed}), "
        f"{took_term:.1f} s after SIGTERM"
    )
    assert took_stop <= LEASE + SLACK and took_kill <= LEASE + SLACK


async def _has(replica: Replica, words: str) -> bool:
    return words in replica.text()
