"""Object names reach API paths: the operator refuses what the CRD refuses (the same table,
tests/chart/test_real_api_server.py), and its paths never leave their namespace even so."""

from __future__ import annotations

import pytest
from tests.helpers import object_names

from embedding_proxy_operator.io import kube
from embedding_proxy_operator.model.spec import SpecError, parse, target_name


@pytest.mark.parametrize(("field", "value"), object_names.REFUSED)
def test_refused(field: str, value: str) -> None:
    with pytest.raises(SpecError) as e:
        parse(object_names.at(field, value))
    assert str(e.value).startswith(f"spec.{field}:")


@pytest.mark.parametrize(("field", "value"), object_names.ACCEPTED)
def test_accepted(field: str, value: str) -> None:
    parse(object_names.at(field, value))


@pytest.mark.parametrize("name", object_names.BAD_NAMES)
def test_a_refused_target_is_no_target(name: str) -> None:
    # What release and reconcile act on: an old object with such a name touches no Deployment.
    assert target_name({"targetRef": {"name": name}}) == ""


def test_target_name() -> None:
    assert target_name({"targetRef": {"name": "tei"}}) == "tei"
    assert target_name({}) == target_name(None) == target_name({"targetRef": {"name": 7}}) == ""


PATHS = [
    lambda n: kube.deployment_path("ns", n),
    lambda n: kube.scale_path("ns", n),
    lambda n: kube.configmap_path("ns", n),
    lambda n: kube.proxy_path("ns", n),
    lambda n: kube.scaledobject_path("ns", n),
    lambda n: kube.pods_path(n),
    lambda n: kube.deployment_path(n, "tei"),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["../../kube-system/deployments/coredns", "a/b", "%2F", "", ".."])
def test_a_name_that_could_leave_its_segment_is_refused(path, name: str) -> None:
    with pytest.raises(ValueError):
        path(name)


@pytest.mark.parametrize("path", PATHS)
def test_a_name_stays_one_path_segment(path) -> None:
    built = path("a?b#c d")
    assert built == path("x").replace("/x", "/a%3Fb%23c%20d", 1)
