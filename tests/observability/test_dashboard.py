"""The Grafana dashboard the chart installs: valid by Grafana's own dashboard model, its queries
valid PromQL (real promtool) reading only metrics the proxy and operator really export, and the
ConfigMap that Grafana's sidecar picks up."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.helpers.grafana_model import problems
from tests.helpers.promql import metric_names
from tests.helpers.tools import helm_template, require_tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "embedding-proxy"
DASHBOARD = CHART / "dashboards" / "embedding-proxy.json"
LABEL_VALUES = re.compile(r"^label_values\((.*),\s*\w+\)$", re.S)
# What a person running it asks first (the list): each must be on the dashboard.
NEEDED = {
    "embedding_proxy_inputs_total",
    "embedding_proxy_requests_total",
    "embedding_proxy_batch_size_bucket",
    "embedding_proxy_batch_size_limit",
    "embedding_proxy_queue_depth",
    "embedding_proxy_inflight_inputs",
    "embedding_proxy_queue_depth_avg",
    "embedding_proxy_operator_target_queue_depth",
    "embedding_proxy_queue_wait_seconds_bucket",
    "embedding_proxy_request_duration_seconds_bucket",
    "embedding_proxy_upstream_duration_seconds_bucket",
    "embedding_proxy_upstream_retries_total",
    "embedding_proxy_upstream_responses_total",
    "embedding_proxy_rejections_total",
    "embedding_proxy_operator_current_replicas",
    "embedding_proxy_operator_desired_replicas",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def queries(dash: dict[str, Any]) -> list[str]:
    """Every PromQL expression: the panels' queries and the variables' (label_values unwrapped)."""
    out = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for variable in dash["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            match = LABEL_VALUES.match(query)
            out.append(match.group(1) if match else query)
    return out


def test_dashboard_fits_grafanas_own_model(dashboard: dict[str, Any]) -> None:
    assert problems(dashboard) == []


def test_the_model_check_finds_what_grafana_would_refuse(dashboard: dict[str, Any]) -> None:
    def broken(change: Any) -> list[str]:
        copied = copy.deepcopy(dashboard)
        change(copied)
        return problems(copied)

    panel = next(i for i, p in enumerate(dashboard["panels"]) if p["type"] == "timeseries")
    assert broken(lambda d: d["panels"][panel].update(type="timeseriez"))
    assert broken(lambda d: d["panels"][panel]["gridPos"].update(h="8"))
    assert broken(lambda d: d["panels"][panel]["options"]["legend"].update(displayMode="lst"))
    assert broken(lambda d: d["panels"][panel]["targets"][0].update(exprr="up"))
    assert broken(lambda d: d["templating"]["list"][1].update(type="quer"))


def test_every_query_names_only_exported_metrics(
    dashboard: dict[str, Any], exported: dict[str, str]
) -> None:
    read = {name for q in queries(dashboard) for name in metric_names(q)}
    assert read - exported.keys() == set()
    assert NEEDED - read == set(), "missing from the dashboard"


def test_every_query_is_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    promtool = require_tool("promtool", "run scripts/install-test-tools as root")
    # Grafana's variables, as Grafana substitutes them, make plain PromQL for promtool's parser.
    values = {"$__rate_interval": "1m", "$namespace": "ml", "$embeddingproxy": "tei", "$pod": "a|b"}
    rules = []
    for i, query in enumerate(queries(dashboard)):
        for name, value in values.items():
            query = query.replace(name, value)
        assert "$" not in query, query
        rules.append({"record": f"dashboard:query_{i}", "expr": query})
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_layout_and_data_source(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for p in dashboard["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{p['title']} overlaps another panel"
        taken |= cells
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "namespace", "embeddingproxy", "pod"]


def render(*flags: str) -> list[dict[str, Any]]:
    return helm_template(*flags, namespace="ml")


def test_chart_installs_it_for_grafanas_sidecar_only_when_enabled() -> None:
    assert not [d for d in render() if d["kind"] == "ConfigMap"]
    (cm,) = [
        d
        for d in render(
            "--set", "dashboards.enabled=true",
            "--set", "dashboards.namespace=monitoring",
            "--set-json", 'dashboards.annotations={"grafana_folder":"Embeddings"}',
        )
        if d["kind"] == "ConfigMap"
    ]  # fmt: skip
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Embeddings"}
    assert json.loads(cm["data"]["embedding-proxy.json"]) == json.loads(DASHBOARD.read_text())


def test_operator_metrics_are_served_and_scraped_with_its_labels() -> None:
    objects = render(
        "--set", "podMonitor.enabled=true", "--api-versions", "monitoring.coreos.com/v1"
    )
    (deployment,) = [d for d in objects if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert env["EMBEDDING_PROXY_OPERATOR_METRICS_PORT"] == str(ports["metrics"])
    (monitor,) = [
        d
        for d in objects
        if d["kind"] == "PodMonitor" and d["metadata"]["name"].endswith("-operator")
    ]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    # The EmbeddingProxy's namespace and pod, not the operator's, so they join the proxies' series.
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True
