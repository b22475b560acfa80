"""What the operator costs the API server at scale, from the audit log of a real one: N
EmbeddingProxies, each with its TEI Deployment (one replica, its pod Pending: there is no
scheduler), spread over namespaces; how long until every Deployment has the sidecar; then, with
nothing changing, how many requests the operator sends in a quiet window, by verb and resource,
how many of them are status patches, and how much CPU it uses.

    python -m tests.helpers.idle_bench --count 200          # scripts/operator-idle-bench
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tests.helpers.control_plane import ControlPlane, start_control_plane

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = str(Path(sys.executable).parent / "embedding-proxy-operator")
AGENTS = ("kopf/", "embedding-proxy-operator")
Obj = dict[str, Any]


@dataclass
class Figures:
    count: int
    injected_seconds: float
    window_seconds: float
    requests: int  # the operator's, in the window, the Lease's apart
    lease_requests: int
    status_patches: int
    cpu_percent: float
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def per_second_per_100(self) -> float:
        return self.requests / self.window_seconds / self.count * 100

    def report(self) -> str:
        lines = [
            f"{self.count} EmbeddingProxies: every Deployment injected "
            f"{self.injected_seconds:.1f} s after kubectl apply",
            f"quiet {self.window_seconds:.0f} s: {self.requests} requests "
            f"({self.requests / self.window_seconds:.2f}/s, {self.per_second_per_100:.2f}/s per "
            f"100 objects), {self.status_patches} status patches, "
            f"{self.lease_requests} on the Lease; operator CPU {self.cpu_percent:.1f} % of a core",
        ]
        lines += [
            f"  {n:6d}  {kind}" for kind, n in sorted(self.by_kind.items(), key=lambda x: -x[1])
        ]
        return "\n".join(lines)


def workload(
    count: int, namespaces: int, prefix: str = "idle", autoscaled: int = 0
) -> tuple[list[str], list[Obj]]:
    """`count` Deployments and their EmbeddingProxies; every `autoscaled`-th (0: none) with the
    built-in autoscaler on."""
    spaces = [f"{prefix}-{i}" for i in range(namespaces)]
    objects: list[Obj] = []
    for i in range(count):
        ns, name = spaces[i % namespaces], f"tei-{i}"
        labels = {"app": name}
        objects.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {
                                    "name": "tei",
                                    "image": "ghcr.io/huggingface/text-embeddings-inference:1.9",
                                    "ports": [{"name": "http", "containerPort": 80}],
                                }
                            ]
                        },
                    },
                },
            }
        )
        objects.append(
            {
                "apiVersion": "embeddingproxy.io/v1alpha1",
                "kind": "EmbeddingProxy",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "targetRef": {"name": name},
                    **(
                        {"autoscaling": {"enabled": True, "maxReplicas": 2}}
                        if autoscaled and i % autoscaled == 0
                        else {}
                    ),
                },
            }
        )
    return spaces, objects


def injected(plane: ControlPlane, spaces: list[str]) -> int:
    out = plane.kubectl("get", "deployments", "-A", "-o", "json").stdout
    return sum(
        1
        for d in json.loads(out)["items"]
        if d["metadata"]["namespace"] in spaces
        and any(
            c.get("name") == "embedding-proxy"
            for c in d["spec"]["template"]["spec"].get("initContainers") or []
        )
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def operator_requests(plane: ControlPlane, since: str, until: str) -> list[Obj]:
    return [
        e
        for e in plane.audit_events()
        if e.get("stage") == "RequestReceived"
        and str(e.get("userAgent", "")).startswith(AGENTS)
        and since <= e["requestReceivedTimestamp"] < until
    ]


def stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def run(
    plane: ControlPlane,
    count: int,
    namespaces: int,
    window: float,
    settle: float,
    log: Path,
    env: dict[str, str] | None = None,
    prefix: str = "idle",
    autoscaled: int = 0,
) -> Figures:
    plane.kubectl("apply", "-f", str(ROOT / "manifests" / "crd.yaml"))
    plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/embeddingproxies.embeddingproxy.io",
    )  # fmt: skip
    spaces, objects = workload(count, namespaces, prefix, autoscaled)
    plane.apply(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in spaces]
    )
    environ = {
        **os.environ,
        "KUBECONFIG": str(plane.kubeconfig),
        "POD_NAMESPACE": "default",
        "POD_ID": "idle-bench",
        **(env or {}),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [OPERATOR, "--all-namespaces"], env=environ, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        manifest = log.parent / "workload.yaml"
        manifest.write_text(yaml.safe_dump_all(objects))
        began = time.monotonic()
        plane.kubectl("create", "-f", str(manifest), timeout=600)
        while injected(plane, spaces) < count:
            if proc.poll() is not None or time.monotonic() - began > 600:
                raise RuntimeError(f"not injected: {log.read_text()[-3000:]}")
            time.sleep(0.5)
        took = time.monotonic() - began
        time.sleep(settle)
        since, cpu = stamp(), cpu_seconds(proc.pid)
        time.sleep(window)
        until, cpu = stamp(), cpu_seconds(proc.pid) - cpu
        time.sleep(2)  # the audit log is written as requests come: let the last ones land
        events = operator_requests(plane, since, until)
    finally:
        proc.terminate()
        proc.wait(60)
    lease = [e for e in events if (e.get("objectRef") or {}).get("resource") == "leases"]
    rest = [e for e in events if e not in lease]
    kinds = collections.Counter(_kind(e) for e in rest)
    return Figures(
        count=count,
        injected_seconds=took,
        window_seconds=window,
        requests=len(rest),
        lease_requests=len(lease),
        status_patches=kinds.get("patch embeddingproxies/status", 0),
        cpu_percent=100 * cpu / window,
        by_kind=dict(kinds),
    )


def _kind(event: Obj) -> str:
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", event.get("requestURI", "?"))
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    return f"{event.get('verb')} {resource}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--window", type=float, default=60.0, help="quiet seconds measured")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after injection")
    parser.add_argument(
        "--autoscaled", type=int, default=0, help="every Nth with the built-in autoscaler on"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="idle-bench-") as tmp:
        plane = start_control_plane(Path(tmp) / "plane")
        try:
            figures = run(
                plane,
                args.count,
                args.namespaces,
                args.window,
                args.settle,
                Path(tmp) / "op.log",
                autoscaled=args.autoscaled,
            )
        finally:
            plane.stop()
    print(figures.report())


if __name__ == "__main__":
    main()
