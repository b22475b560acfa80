"""The operator's own /metrics, end to end: the operator as its own process against the real API
server, a real proxy (behind the TEI simulator) standing in for a ready pod's sidecar at
127.0.0.1, and what a user's Prometheus would read from the operator."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tests.helpers.control_plane import ControlPlane, one_ready_pod
from tests.helpers.exported import post_json, scrape
from tests.helpers.processes import PYTHON, free_port, proxy_args, running

from embedding_proxy_operator.logic import render
from embedding_proxy_operator.model import names
from embedding_proxy_operator.model.spec import parse

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = str(Path(PYTHON).parent / "embedding-proxy-operator")
NS = "operator-metrics"
APP = "tei-metrics"
POD = f"{APP}-0"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(url: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(scrape(url)):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def columns(table: str) -> dict[str, str]:
    """The first row of `kubectl get` output, by column (cells start where their header does)."""
    header, row = table.splitlines()[:2]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}


def wait_for(probe: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll until `probe` returns something truthy (a busy machine is slow, not wrong)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


def test_operator_exports_replicas_decisions_and_pod_readings(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    plane = control_plane
    plane.kubectl("apply", "-f", str(ROOT / "manifests" / "crd.yaml"))
    plane.kubectl("wait", "--for=condition=Established", "crd/embeddingproxies.embeddingproxy.io")
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    sim_port, api_port, metrics_port, operator_port = (free_port() for _ in range(4))
    spec = {
        "targetRef": {"name": APP},
        "upstream": {"url": f"http://127.0.0.1:{sim_port}"},
        "sidecar": {"ports": {"api": api_port, "metrics": metrics_port}},
        "autoscaling": {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 1,
            "targetQueueDepthPerPod": 1,
            "pollSeconds": 1,
        },
    }
    version = render.proxy_config(parse(spec))["version"]
    # The pod the test plays kubelet for: ready, at 127.0.0.1, running the sidecar.
    one_ready_pod(plane, NS, APP, POD, names.SIDECAR_NAME)

    simulator = [PYTHON, "-m", "embedding_proxy.simulator", "--host", "127.0.0.1"]
    proxy = proxy_args(f"http://127.0.0.1:{sim_port}", api_port, "--metrics-port")
    operator = [OPERATOR, f"--namespace={NS}", "--standalone"]
    operator_env = {
        "KUBECONFIG": str(plane.kubeconfig),
        "EMBEDDING_PROXY_OPERATOR_METRICS_PORT": str(operator_port),
        "EMBEDDING_PROXY_OPERATOR_STATUS_SECONDS": "0.5",
    }
    metrics_url = f"http://127.0.0.1:{operator_port}/metrics"
    key = {"namespace": NS, "embeddingproxy": APP}
    with (
        running([*simulator, "--port", str(sim_port)], sim_port, tmp_path / "sim.log"),
        running(
            [*proxy, str(metrics_port)],
            api_port,
            tmp_path / "proxy.log",
            env={"EMBEDDING_PROXY_VERSION": version},
            ready_path="/ready",
        ),
        running(
            operator, operator_port, tmp_path / "op.log", env=operator_env, ready_path="/metrics"
        ),
    ):
        plane.apply(
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "metadata": {"name": APP, "namespace": NS},
                "spec": spec,
            }
        )

        # One caller at a time, 8 inputs each: every upstream call holds 8 of at most 32.
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                post_json(f"http://127.0.0.1:{api_port}/embed", {"inputs": ["x"] * 8})

        caller = threading.Thread(target=load, daemon=True)
        caller.start()
        try:

            def filled() -> Samples | None:
                found = samples(metrics_url)
                fill = value(found, "embedding_proxy_operator_pod_batch_fill", **key, pod=POD)
                return found if fill is not None else None

            found = wait_for(filled, "the pod's batch fill in the operator's metrics")
            assert value(found, "embedding_proxy_operator_pod_batch_fill", **key, pod=POD) == 0.25
            assert value(found, "embedding_proxy_operator_pod_queue_depth", **key, pod=POD) >= 0
            assert value(found, "embedding_proxy_operator_pods_ready", **key) == 1
            assert value(found, "embedding_proxy_operator_pods_on_config_version", **key) == 1
            assert value(found, "embedding_proxy_operator_max_replicas", **key) == 1
            assert value(found, "embedding_proxy_operator_min_replicas", **key) == 1
            assert value(found, "embedding_proxy_operator_target_queue_depth", **key) == 1
            assert value(found, "embedding_proxy_operator_desired_replicas", **key) == 1
            states = [
                dict(labels)["state"]
                for (name, labels), v in found.items()
                if name == "embedding_proxy_operator_autoscaling_state" and v == 1
            ]
            assert len(states) == 1, states

            # The same figures in status, and in `kubectl get -o wide`'s columns.
            def in_status() -> dict[str, Any] | None:
                out = plane.kubectl("get", names.PLURAL, APP, "-n", NS, "-o", "json").stdout
                status = json.loads(out).get("status") or {}
                return status if status.get("batchFillPercent") == 25 else None

            status = wait_for(in_status, "the batch fill in status")
            (pod,) = status["pods"]
            assert pod["name"] == POD and pod["batchFillPercent"] == 25
            assert isinstance(pod["queueDepth"], int) and isinstance(status["queueDepth"], int)

            def wide() -> dict[str, str] | None:
                text = plane.kubectl("get", names.PLURAL, APP, "-n", NS, "-o", "wide").stdout
                return columns(text) if columns(text).get("FILL%") == "25" else None

            assert wait_for(wide, "FILL% in kubectl get -o wide")["QUEUE"].isdigit()
        finally:
            stop.set()
            caller.join(30)

        # Deleting the EmbeddingProxy takes its series away.
        plane.kubectl("delete", names.PLURAL, APP, "-n", NS, "--wait=true", timeout=120)

        def gone() -> bool:
            page = scrape(metrics_url)
            return f'embeddingproxy="{APP}"' not in page

        wait_for(gone, "the deleted EmbeddingProxy's series to go")
    plane.kubectl("delete", "namespace", NS, "--wait=false")
