"""The proxy's worker processes as the operator renders them: `sidecar.workers`, else the
sidecar's CPU limit rounded up."""

from __future__ import annotations

from typing import Any

import pytest

from embedding_proxy.config.settings import Config
from embedding_proxy_operator.logic import cpu_limit, render
from embedding_proxy_operator.model.spec import SpecError, parse


def workers_of(**sidecar: Any) -> object:
    config = render.proxy_config(parse({"targetRef": {"name": "tei"}, "sidecar": sidecar}))
    assert Config.model_validate(config).server.workers == config["server"]["workers"]
    return config["server"]["workers"]


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"cpu": "2"}, 2),
        ({"cpu": 3}, 3),
        ({"cpu": "1500m"}, 2),
        ({"cpu": "250m"}, 1),
        ({"cpu": "0.5"}, 1),
        ({"cpu": "4.2"}, 5),
        ({"memory": "1Gi"}, "auto"),  # no CPU limit: the proxy counts the CPUs it may use
        ({}, "auto"),
    ],
)
def test_unset_workers_follow_the_cpu_limit(limits: dict[str, Any], expected: object) -> None:
    assert workers_of(resources={"requests": {"cpu": "100m"}, "limits": limits}) == expected


def test_defaults_and_an_explicit_count() -> None:
    assert workers_of() == 2  # the default limit: 2 CPUs
    assert workers_of(workers=6) == 6  # the CR's word wins over the limit
    assert workers_of(workers=1, resources={"limits": {"cpu": "8"}}) == 1
    assert workers_of(resources={"requests": {"cpu": "1"}}) == "auto"


def test_a_change_of_workers_restarts_the_pods() -> None:
    one = render.proxy_config(parse({"targetRef": {"name": "tei"}, "sidecar": {"workers": 1}}))
    two = render.proxy_config(parse({"targetRef": {"name": "tei"}, "sidecar": {"workers": 2}}))
    assert render.restart_hash(one) != render.restart_hash(two)


@pytest.mark.parametrize("bad", [0, 1025, "auto"])
def test_a_bad_count_is_refused(bad: object) -> None:
    with pytest.raises(SpecError):
        parse({"targetRef": {"name": "tei"}, "sidecar": {"workers": bad}})


@pytest.mark.parametrize(
    ("quantity", "cores"), [("2", 2), ("100m", 0.1), ("1.5", 1.5), (4, 4), ("1k", 1000)]
)
def test_cpu_quantities(quantity: object, cores: float) -> None:
    assert float(cpu_limit.cores(quantity) or -1) == pytest.approx(cores)  # type: ignore[arg-type]


@pytest.mark.parametrize("quantity", ["two", "", "1x", "m"])
def test_not_quantities(quantity: str) -> None:
    assert cpu_limit.cores(quantity) is None
