"""Which metric names the proxy and the operator really export: each started as its own process,
its /metrics scraped and parsed. What a dashboard or an alert rule may name is checked against
this, not against the source."""

from __future__ import annotations

import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

# The sample names each family type exposes (prometheus_client's text format).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "unknown": ("",),
}


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def series_names(text: str) -> dict[str, str]:
    """Every series name a page can carry, whether or not a labelled child exists yet: the
    families' declared names with their type's suffixes, and each sample seen. Name -> type."""
    names: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.type
        for sample in family.samples:
            names.setdefault(sample.name, family.type)
    return names


def post_json(url: str, body: object) -> int:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return resp.status
