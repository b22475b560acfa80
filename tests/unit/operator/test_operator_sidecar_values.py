"""The operator refuses the sidecar values that pod validation would refuse once they are in the
target's template, with the CRD's own patterns and messages (the same table runs against a real
API server in tests/chart/test_sidecar_values_api_server.py)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.helpers.sidecar_values import ACCEPTED, REFUSED

from embedding_proxy_operator.model import quantity, sidecar_rules
from embedding_proxy_operator.model.spec import SpecError, parse

ROOT = Path(__file__).resolve().parents[3]


def with_sidecar(sidecar: dict[str, Any]) -> dict[str, Any]:
    return {"targetRef": {"name": "tei"}, "sidecar": sidecar}


@pytest.mark.parametrize(("sidecar", "message"), REFUSED)
def test_refused_values(sidecar: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as e:
        parse(with_sidecar(sidecar))
    assert message in str(e.value)
    assert str(e.value).startswith(("spec.sidecar.image: ", "spec.sidecar.resources: "))


@pytest.mark.parametrize("sidecar", ACCEPTED)
def test_accepted_values(sidecar: dict[str, Any]) -> None:
    parse(with_sidecar(sidecar))


def test_the_message_names_the_resource_and_both_amounts() -> None:
    with pytest.raises(SpecError) as e:
        parse(with_sidecar({"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": 1}}}))
    assert "requests.cpu is 2, limits.cpu 1" in str(e.value)


def sidecar_schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "manifests" / "crd.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec["properties"]["sidecar"]["properties"]


def test_the_crd_uses_the_same_patterns_and_messages() -> None:
    image = sidecar_schema()["image"]
    assert image["x-kubernetes-validations"] == [
        {
            "rule": f"self.matches(r'{sidecar_rules.IMAGE_PATTERN}')",
            "message": sidecar_rules.IMAGE_MESSAGE,
        }
    ]
    assert image["maxLength"] == sidecar_rules.IMAGE_MAX_LENGTH
    res = sidecar_schema()["resources"]
    (over,) = res["x-kubernetes-validations"]
    assert over["message"] == sidecar_rules.REQUEST_OVER_LIMIT_MESSAGE
    assert "isGreaterThan" in over["rule"]
    names = ", ".join(f"'{n}'" for n in sidecar_rules.RESOURCE_NAMES)
    for kind in sidecar_rules.RESOURCE_KINDS:
        amounts = res["properties"][kind]
        assert amounts["maxProperties"] == len(sidecar_rules.RESOURCE_NAMES)
        rules = {r["message"]: r["rule"] for r in amounts["x-kubernetes-validations"]}
        assert rules[sidecar_rules.RESOURCE_NAMES_MESSAGE] == f"self.all(k, k in [{names}])"
        assert "isLessThan(quantity('0'))" in rules[sidecar_rules.QUANTITY_MESSAGE]
        values = amounts["additionalProperties"]
        assert values["pattern"] == quantity.PATTERN
        assert values["maxLength"] == sidecar_rules.QUANTITY_MAX_LENGTH


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", Fraction(2)),
        (2, Fraction(2)),
        ("500m", Fraction(1, 2)),
        ("+.5", Fraction(1, 2)),
        ("1.", Fraction(1)),
        ("1Gi", Fraction(2**30)),
        ("1e3", Fraction(1000)),
        ("1E", Fraction(10**18)),
        ("1E3", Fraction(1000)),
        ("1e-3", Fraction(1, 1000)),
        # A binary suffix, not "E" and an exponent "i".
        ("1Ei", Fraction(2**60)),
        ("2Ei", Fraction(2**61)),
        ("0.5Ei", Fraction(2**59)),
        ("1024Pi", Fraction(2**60)),
        ("-1k", Fraction(-1000)),
        # Finer than the nano unit: rounded away from zero, as ParseQuantity does.
        ("0.0000000001", Fraction(1, 10**9)),
        ("-0.0000000001", Fraction(-1, 10**9)),
    ],
)
def test_quantities_read_as_the_api_server_reads_them(text: object, value: Fraction) -> None:
    assert quantity.parse(text) == value


def test_exbi_is_binary() -> None:
    assert quantity.parse("1Ei") == quantity.parse("1024Pi") != quantity.parse("1E")


@pytest.mark.parametrize(
    "text", ["", " 1", "1 ", "1e", "1e1.5", ".", "two", "1Ki2", "1Eii", "1ei", True, 1.5]
)
def test_not_quantities(text: object) -> None:
    assert quantity.parse(text) is None


def test_every_quantity_the_crd_pattern_takes_is_read_or_caught() -> None:
    import re

    for text in [
        "1",
        "1.5",
        ".5",
        "+1",
        "-1",
        "1m",
        "1Mi",
        "1e-3",
        "1E+3",
        "1e1.5",
        "1.e2",
        "1Ei",
        "1E",
    ]:
        assert re.fullmatch(quantity.PATTERN, text), text
        # The pattern lets "1e1.5" through; the CEL rule (isQuantity) and the operator refuse it.
        assert (quantity.parse(text) is None) == (text == "1e1.5"), text
