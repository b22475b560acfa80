"""The chart's alert rules: valid for real promtool, each unit-tested with `promtool test rules`,
reading only metrics the proxy and operator really export, each with its runbook in docs/."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.helpers.promql import metric_names
from tests.helpers.tools import helm_template, require_helm, require_tool

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "embedding-proxy"
RULES_FILE = CHART / "alerts" / "embedding-proxy.rules.yaml"
UNIT_TESTS = Path(__file__).with_name("alerts.test.yaml")
RUNBOOKS = ROOT / "docs" / "alerts.md"
MONITORING = ("--api-versions", "monitoring.coreos.com/v1")
WANTED = {
    "EmbeddingProxyUpstreamUnreachable",
    "EmbeddingProxyQueueFull",
    "EmbeddingProxyHighErrorRatio",
    "EmbeddingProxyAutoscalerAtMaximum",
    "EmbeddingProxyConfigReloadFailed",
    "EmbeddingProxyOldConfigVersion",
    "EmbeddingProxyOperatorMetricsAbsent",
}


def render(*flags: str) -> list[dict[str, Any]]:
    return helm_template(*flags, namespace="monitoring")


def prometheus_rule(*flags: str) -> dict[str, Any]:
    (rule,) = [
        d
        for d in render("--set", "alerts.enabled=true", *MONITORING, *flags)
        if d["kind"] == "PrometheusRule"
    ]
    return rule


def rules(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "run scripts/install-test-tools as root (Debian's prometheus)")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PrometheusRule's groups as the chart renders them, in a rules file."""
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": prometheus_rule()["spec"]["groups"]}))
    return path


def test_promtool_checks_the_rules_file_and_the_rendered_rules(
    promtool: str, rendered: Path
) -> None:
    for path in (RULES_FILE, rendered):
        done = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"SUCCESS: {len(WANTED)} rules found" in done.stdout


def test_every_rule_passes_its_promtool_unit_test(promtool: str, rendered: Path) -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    cases: dict[str, list[bool]] = {}
    for test in tests["tests"]:
        for case in test["alert_rule_test"]:
            cases.setdefault(case["alertname"], []).append(bool(case["exp_alerts"]))
    # Each rule is shown both firing and not firing.
    assert {name: set(v) for name, v in cases.items()} == {name: {True, False} for name in WANTED}

    shutil.copy(UNIT_TESTS, rendered.parent / UNIT_TESTS.name)
    done = subprocess.run(
        [promtool, "test", "rules", UNIT_TESTS.name],
        capture_output=True,
        text=True,
        cwd=rendered.parent,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rules_read_only_metrics_that_are_exported(exported: dict[str, str]) -> None:
    read = {name for r in rules(prometheus_rule()) for name in metric_names(r["expr"])}
    assert read, "no metric found in the rules: the parser is broken"
    assert read <= exported.keys(), sorted(read - exported.keys())


def test_every_alert_links_to_its_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    rendered = rules(prometheus_rule())
    assert {r["alert"] for r in rendered} == WANTED
    for r in rendered:
        path, _, anchor = r["annotations"]["runbook_url"].partition("#")
        assert path == "docs/alerts.md" and anchor in anchors, r["annotations"]["runbook_url"]
        assert r["labels"]["severity"] in {"warning", "critical"}


def test_values_add_labels_and_resolve_runbook_links() -> None:
    base = "https://git.example.com/ml/embedding-proxy/blob/main/docs/alerts.md"
    rule = prometheus_rule(
        "--set",
        f"alerts.runbookBaseUrl={base}",
        "--set-json",
        'alerts.labels={"team":"search","severity":"page"}',
        "--set-json",
        'alerts.ruleLabels={"release":"kube-prometheus-stack"}',
    )
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for r in rules(rule):
        assert r["labels"]["team"] == "search"
        assert r["labels"]["severity"] != "page", "an alert's own severity must win"
        assert r["annotations"]["runbook_url"] == f"{base}#{r['alert'].lower()}"


def alerts_config_map(*flags: str) -> dict[str, Any]:
    (cm,) = [
        d
        for d in render("--set", "alerts.enabled=true", *flags)
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-alerts")
    ]
    return cm


def test_no_rules_unless_enabled() -> None:
    kinds = lambda *flags: {d["kind"] for d in render(*flags)}  # noqa: E731
    assert "PrometheusRule" not in kinds(*MONITORING)
    assert not [d for d in render(*MONITORING) if d["metadata"]["name"].endswith("-alerts")]


def test_without_the_prometheus_operator_the_rules_come_as_a_plain_rules_file(
    promtool: str, tmp_path: Path
) -> None:
    """`helm template` (Argo CD, Flux) and clusters without monitoring.coreos.com/v1 get the
    rules as a ConfigMap holding a rule file Prometheus loads as it is, the same rules as the
    PrometheusRule's."""
    objects = render("--set", "alerts.enabled=true", "--set", "alerts.configMap.labels.a=b")
    assert "PrometheusRule" not in {d["kind"] for d in objects}
    cm = alerts_config_map("--set", "alerts.configMap.labels.a=b")
    assert cm["metadata"]["labels"]["a"] == "b"
    path = tmp_path / "embedding-proxy.rules.yaml"
    path.write_text(cm["data"]["embedding-proxy.rules.yaml"])
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert yaml.safe_load(path.read_text())["groups"] == prometheus_rule()["spec"]["groups"]
    # Where the Prometheus Operator is served, both come.
    served = render("--set", "alerts.enabled=true", *MONITORING)
    assert {"PrometheusRule", "ConfigMap"} <= {d["kind"] for d in served}


def test_neither_rules_file_nor_prometheusrule_fails_the_render() -> None:
    flags = ["--set", "alerts.enabled=true", "--set", "alerts.configMap.enabled=false"]
    done = subprocess.run(
        [require_helm(), "template", "ep", str(CHART), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "monitoring.coreos.com/v1" in done.stderr and "no rules" in done.stderr, done.stderr
    served = render(*flags, *MONITORING)
    assert "PrometheusRule" in {d["kind"] for d in served}
    assert not [
        d for d in served if d["metadata"]["name"].endswith("-alerts") and d["kind"] == "ConfigMap"
    ]


def test_the_install_notes_say_where_the_rules_are() -> None:
    done = subprocess.run(
        [require_helm(), "install", "ep", str(CHART), "--dry-run=client", "-n", "monitoring",
         "--set", "alerts.enabled=true"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    assert "ConfigMap ep-embedding-proxy-alerts: embedding-proxy.rules.yaml" in notes
    assert "No PrometheusRule: monitoring.coreos.com/v1 is not served here" in notes
