"""The dashboard and the alert rules against a real Prometheus (Debian's `prometheus`, on loopback)
scraping a real proxy under load. Every dashboard query, its variables filled as Grafana fills
them (All, then each first value), returns data: the proxy's panels from the proxy alone, scraped
by a plain job without namespace or pod labels (as compose or `serve` are), then every panel once
a real operator watches a real EmbeddingProxy and is scraped too, as the chart's PodMonitors do.
Then one of the chart's alerts fires and resolves."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.helpers.control_plane import ControlPlane, one_ready_pod
from tests.helpers.processes import PYTHON, free_port, proxy_args, running, start_process
from tests.helpers.prometheus import Prometheus, fill, grafana_choices, targets, wait_until

from embedding_proxy_operator.logic import render
from embedding_proxy_operator.model import names
from embedding_proxy_operator.model.spec import parse

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads(
    (ROOT / "charts/embedding-proxy/dashboards/embedding-proxy.json").read_text()
)
RULES = yaml.safe_load(
    (ROOT / "charts/embedding-proxy/alerts/embedding-proxy.rules.yaml").read_text()
)
OPERATOR = str(Path(PYTHON).parent / "embedding-proxy-operator")
NS, APP = "prom-dashboard", "tei-prom"
POD = f"{APP}-0"
# Series of events the test does not cause (an upstream retry needs a failing TEI, a reconcile
# error a failing API server): their queries must be accepted, and may be empty.
EVENT_ONLY = ("embedding_proxy_upstream_retries_total", "embedding_proxy_operator_reconcile_errors")
ALERT = "EmbeddingProxyUpstreamUnreachable"


def post(url: str, body: object) -> int:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


@pytest.fixture
def load(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Callers on both APIs, four at once, until the test ends; bursts beyond the queue's small
    capacity are refused with 429 (the rejections panel), the rest batched."""
    stop = threading.Event()
    statuses: list[int] = []

    def start(url: str) -> list[int]:
        def caller(i: int) -> None:
            while not stop.is_set():
                if i % 2:
                    statuses.append(post(url + "/embed", {"inputs": ["x"] * 8}))
                else:
                    statuses.append(
                        post(url + "/v1/embeddings", {"input": ["y"] * 8, "model": "m"})
                    )

        for i in range(4):
            threading.Thread(target=caller, args=(i,), daemon=True).start()
        return statuses

    yield start
    stop.set()


def evaluate(prometheus: Prometheus, operator: bool) -> dict[str, list[str]]:
    """Every panel query, for All and for each first value: which returned nothing."""
    empty: dict[str, list[str]] = {}
    for name, pick in (("All", lambda options: None), ("first", lambda options: options[0])):
        values = grafana_choices(prometheus, DASHBOARD["templating"]["list"], pick)
        for title, legend, expr in targets(DASHBOARD):
            from_operator = "embedding_proxy_operator_" in expr
            if (from_operator and not operator) or any(e in expr for e in EVENT_ONLY):
                prometheus.query(fill(expr, values))  # accepted, whatever it returns
                continue
            if not prometheus.query(fill(expr, values)):
                empty.setdefault(name, []).append(f"{title} / {legend}: {fill(expr, values)}")
    return empty


def all_return_data(prometheus: Prometheus, operator: bool) -> None:
    # Rates need two scrapes in their window, the operator a poll or two: wait, within bounds.
    last: list[dict[str, list[str]]] = []

    def none_empty() -> bool:
        last[:] = [evaluate(prometheus, operator)]
        return not last[0]

    try:
        wait_until(none_empty, "every dashboard query to return data", timeout=45)
    except AssertionError:
        raise AssertionError(json.dumps(last[0], indent=1)) from None


def the_operators_panels_say_so() -> None:
    for panel in DASHBOARD["panels"]:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        ops = ["embedding_proxy_operator_" in e for e in exprs]
        if exprs and all(ops):
            assert panel["title"].endswith("(operator)"), panel["title"]
        for target, op in zip(panel.get("targets", []), ops, strict=True):
            if op and not all(ops):
                assert target["legendFormat"].endswith("(operator)"), target


def setup_cluster(plane: ControlPlane, sim_port: int, api_port: int, metrics_port: int) -> dict:
    """The EmbeddingProxy's objects; its one pod is ready at 127.0.0.1, where the test's proxy
    runs (the test plays its kubelet)."""
    plane.kubectl("apply", "-f", str(ROOT / "manifests" / "crd.yaml"))
    plane.kubectl("wait", "--for=condition=Established", "crd/embeddingproxies.embeddingproxy.io")
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    one_ready_pod(plane, NS, APP, POD, names.SIDECAR_NAME)
    return {
        "targetRef": {"name": APP},
        "upstream": {"url": f"http://127.0.0.1:{sim_port}"},
        "sidecar": {"image": "proxy:test", "ports": {"api": api_port, "metrics": metrics_port}},
        # Under the test's load it scales to 2 at once: the last scaling has a time.
        "autoscaling": {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 2,
            "targetQueueDepthPerPod": 1,
            "pollSeconds": 1,
        },
    }


def job(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}], **extra}


def rules_firing_fast() -> dict[str, Any]:
    """The chart's rules as they ship, but the one the test fires waits 1 s, not 2 min."""
    rules = json.loads(json.dumps(RULES))
    for rule in rules["groups"][0]["rules"]:
        if rule["alert"] == ALERT:
            rule["for"] = "1s"
    return rules


def firing(prometheus: Prometheus) -> list[dict[str, Any]]:
    return [
        a
        for a in prometheus.alerts()
        if a["labels"]["alertname"] == ALERT and a["state"] == "firing"
    ]


@pytest.mark.timeout(300)
def test_dashboard_and_alerts_on_a_real_prometheus(
    control_plane: ControlPlane, tmp_path: Path, load: Any
) -> None:
    the_operators_panels_say_so()
    sim_port, api_port, metrics_port, operator_port = (free_port() for _ in range(4))
    spec = setup_cluster(control_plane, sim_port, api_port, metrics_port)
    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump({"batching": {"queue_capacity": 12}}))
    simulator = [PYTHON, "-m", "embedding_proxy.simulator", "--host", "127.0.0.1"]
    simulator += ["--port", str(sim_port)]
    proxy = proxy_args(f"http://127.0.0.1:{sim_port}", api_port, "--metrics-port")
    proxy += [str(metrics_port), "--config", str(config)]
    # It runs the config version the operator writes, as an injected sidecar does.
    proxy_env = {"EMBEDDING_PROXY_VERSION": render.proxy_config(parse(spec))["version"]}
    operator = [OPERATOR, f"--namespace={NS}", "--standalone"]
    operator_env = {
        "KUBECONFIG": str(control_plane.kubeconfig),
        "EMBEDDING_PROXY_OPERATOR_METRICS_PORT": str(operator_port),
        "EMBEDDING_PROXY_OPERATOR_STATUS_SECONDS": "0.5",
    }
    prometheus = Prometheus(tmp_path)
    # The proxy alone, scraped by a plain job: no namespace, pod or EmbeddingProxy labels.
    prometheus.write([job("compose", metrics_port)], rules_firing_fast())
    tei = start_process(simulator, sim_port, tmp_path / "sim.log")
    try:
        with running(proxy, api_port, tmp_path / "proxy.log", env=proxy_env, ready_path="/ready"):
            statuses = load(f"http://127.0.0.1:{api_port}")
            # A config file the proxy refuses: it keeps the last good one and counts a failure.
            config.write_text("batching: {max_batch_size: -1}\n")
            prometheus.start()
            all_return_data(prometheus, operator=False)
            assert 200 in statuses and 429 in statuses
            assert prometheus.label_values("namespace", "embedding_proxy_upstream_up") == []

            # As the chart's PodMonitors scrape: the proxies with their namespace and pod, the
            # operator with honor_labels (its series carry the EmbeddingProxy's).
            labelled = {"targets": [f"127.0.0.1:{metrics_port}"]}
            labelled["labels"] = {"namespace": NS, "pod": POD}  # type: ignore[assignment]
            jobs = [{"job_name": "proxies", "static_configs": [labelled]}]
            jobs.append(job("operator", operator_port, honor_labels=True))
            prometheus.write(jobs, rules_firing_fast())
            with running(operator, operator_port, tmp_path / "operator.log", env=operator_env,
                         ready_path="/metrics"):  # fmt: skip
                proxy_object = {"metadata": {"name": APP, "namespace": NS}, "spec": spec}
                control_plane.apply(
                    {"apiVersion": names.API_VERSION, "kind": names.KIND, **proxy_object}
                )
                prometheus.reload()
                all_return_data(prometheus, operator=True)
                assert prometheus.label_values("namespace", "embedding_proxy_upstream_up") == [NS]

                # TEI stops answering: the alert fires for the pod, and resolves once it is back.
                tei.stop()
                (alert,) = wait_until(lambda: firing(prometheus), f"{ALERT} firing", timeout=60)
                assert (alert["labels"]["namespace"], alert["labels"]["pod"]) == (NS, POD)
                assert alert["annotations"]["summary"] == f"TEI behind {NS}/{POD} does not answer"
                tei = start_process(simulator, sim_port, tmp_path / "sim.log")
                wait_until(lambda: not firing(prometheus), f"{ALERT} resolved", timeout=60)
                control_plane.kubectl("delete", names.PLURAL, APP, "-n", NS, timeout=120)
    finally:
        prometheus.stop()
        tei.stop()
        control_plane.kubectl("delete", "namespace", NS, "--wait=false")
