"""A real Prometheus (Debian's `prometheus`) on loopback for the tests, and the dashboard's queries
as Grafana sends them: its variables filled from Prometheus' label values, as Grafana fills
them, then substituted the way Grafana formats them for PromQL."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from tests.helpers.processes import Process, free_port, start_process
from tests.helpers.tools import require_tool

# Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval); with the
# 1 s scrape interval below and a short time range, 4 s.
SCRAPE_SECONDS = 1
RATE_INTERVAL = f"{4 * SCRAPE_SECONDS}s"
LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.*),\s*)?(?P<label>\w+)\)$", re.S)
# The characters Grafana escapes in a value it puts into a regex matcher.
REGEX_SPECIAL = re.compile(r"([\\^$*+?.()|{}\[\]])")


class Prometheus:
    """Prometheus with a config file the test rewrites and reloads (POST /-/reload)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.config = directory / "prometheus.yml"
        self.rules = directory / "rules.yaml"
        self.port = free_port()
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write(self, jobs: list[dict[str, Any]], rules: dict[str, Any] | None = None) -> None:
        self.rules.write_text(yaml.safe_dump(rules or {"groups": []}))
        config = {
            "global": {
                "scrape_interval": f"{SCRAPE_SECONDS}s",
                "scrape_timeout": f"{SCRAPE_SECONDS}s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(self.rules)],
            "scrape_configs": jobs,
        }
        self.config.write_text(yaml.safe_dump(config))

    def start(self) -> None:
        binary = require_tool("prometheus", "run scripts/install-test-tools as root")
        args = [
            binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]
        self.process = start_process(args, self.port, self.directory / "log", ready_path="/-/ready")

    def reload(self) -> None:
        request = urllib.request.Request(self.url + "/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def api(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's series (a query Prometheus refuses fails the test)."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] == "vector" else [data["result"]]

    def label_values(self, label: str, selector: str) -> list[str]:
        return sorted(self.api(f"label/{label}/values", **{"match[]": [selector]}))

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]

    def targets_up(self) -> set[str]:
        active = self.api("targets", state="active")["activeTargets"]
        return {t["labels"]["job"] for t in active if t["health"] == "up"}


def fill(query: str, values: dict[str, str]) -> str:
    """A query with its variables as Grafana substitutes them."""
    query = query.replace("$__rate_interval", RATE_INTERVAL)
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        query = query.replace(f"${name}", value)
    assert "$" not in query, query
    return query


def grafana_choices(
    prometheus: Prometheus, variables: list[dict[str, Any]], pick: Callable[[list[str]], str | None]
) -> dict[str, str]:
    """Each query variable filled in order (a later one's query may use an earlier one), as
    Grafana does: its options are the label values Prometheus has for its selector; `pick`
    chooses one of them, or None for All (the variable's allValue; Grafana offers All alone
    when there are no values)."""
    chosen: dict[str, str] = {}
    for variable in variables:
        if variable["type"] != "query":
            continue
        found = LABEL_VALUES.match(variable["query"]["query"])
        assert found, variable["query"]["query"]
        selector = fill(found["selector"], chosen)
        options = prometheus.label_values(found["label"], selector)
        picked = pick(options) if options else None
        if picked is None:
            assert variable["includeAll"], f"${variable['name']} has no values and no All"
            chosen[variable["name"]] = variable["allValue"]
        else:
            escaped = REGEX_SPECIAL.sub(r"\\\1", picked)
            # Grafana writes a multi-value variable's choices as a regex group.
            chosen[variable["name"]] = f"({escaped})" if variable.get("multi") else escaped
    return chosen


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, legend, query) of every panel's every query."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target.get("legendFormat", ""), target["expr"]


def wait_until(probe: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")
