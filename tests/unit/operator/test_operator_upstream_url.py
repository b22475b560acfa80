"""The operator's check of upstream.url is the CRD's: the same patterns, the same table of URLs
(tests/chart/test_real_api_server.py sends it to a real API server)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.helpers.upstream_urls import ACCEPTED, BAD_URL, REFUSED, SELF_LOOP

from embedding_proxy_operator.model import spec
from embedding_proxy_operator.model.spec import SpecError, parse

ROOT = Path(__file__).resolve().parents[3]
MESSAGES = {
    SELF_LOOP: "points at the proxy's own port",
    BAD_URL: "upstream.url must be http(s)://host[:port][/path]",
}


@pytest.mark.parametrize(("url", "kind"), REFUSED)
def test_refused_urls(url: str, kind: str) -> None:
    with pytest.raises(SpecError) as e:
        parse({"targetRef": {"name": "tei"}, "upstream": {"url": url}})
    assert MESSAGES[kind] in str(e.value)


@pytest.mark.parametrize("url", ACCEPTED)
def test_accepted_urls(url: str) -> None:
    parse({"targetRef": {"name": "tei"}, "upstream": {"url": url}})


@pytest.mark.parametrize(
    ("url", "port", "local"),
    [
        ("http://127.0.0.1", 80, True),
        ("https://LocalHost./x", 443, True),
        ("http://[::1]:3000/", 3000, True),
        ("http://[fd00::1]:8000", 8000, False),
        ("http://localhost.example:8000", 8000, False),
        ("http://127.example:8000", 8000, False),
    ],
)
def test_port_and_locality(url: str, port: int, local: bool) -> None:
    up = spec.Upstream(url=url)
    assert (up.port, up.is_local) == (port, local)


def test_the_crd_uses_the_same_patterns() -> None:
    crd = yaml.safe_load((ROOT / "manifests" / "crd.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    url = schema["properties"]["upstream"]["properties"]["url"]
    assert [r["rule"] for r in url["x-kubernetes-validations"]] == [
        f"self.matches(r'{spec.URL_PATTERN}')"
    ]
    assert url["x-kubernetes-validations"][0]["message"] == spec.URL_MESSAGE
    assert url["maxLength"] == 2048
    (loop,) = [r for r in schema["x-kubernetes-validations"] if "upstream.url" in r["rule"]]
    assert f"!self.upstream.url.matches(r'{spec.LOCAL_URL_PATTERN}')" in loop["rule"]


def test_replica_bounds_are_int32() -> None:
    for field in ("minReplicas", "maxReplicas"):
        with pytest.raises(SpecError, match="less than or equal to 2147483647"):
            parse({"targetRef": {"name": "tei"}, "autoscaling": {field: 2**31}})


def test_names_longer_than_a_label_value_are_an_invalid_spec() -> None:
    from embedding_proxy_operator.logic.plan import plan

    proxy = {
        "metadata": {"name": "p" * 64, "namespace": "ns"},
        "spec": {"targetRef": {"name": "t"}},
    }
    result = plan(proxy, None, True)
    assert result.configmap is None
    assert {f.reason for f in result.facts} == {"InvalidSpec"}
    assert "at most 63 characters" in result.facts[0].message
