"""Priority lanes in the spec: the operator refuses what the CRD refuses, with the same message
(tests/chart/test_real_api_server.py sends the same table to a real API server), and renders the
lanes into the proxy's config, where they apply live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.helpers import lane_specs
from tests.helpers.lane_specs import TWO, lanes

from embedding_proxy.config import settings as proxy_config
from embedding_proxy_operator.logic import render
from embedding_proxy_operator.model import spec as spec_module
from embedding_proxy_operator.model.spec import SpecError, parse

CRD = Path(__file__).resolve().parents[3] / "manifests" / "crd.yaml"


def spec(fields: dict[str, Any]) -> Any:
    return parse({"targetRef": {"name": "tei"}, **fields})


@pytest.mark.parametrize(("fields", "message"), lane_specs.REFUSED)
def test_refused_lane_specs(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as e:
        spec(fields)
    assert message in str(e.value)


@pytest.mark.parametrize("fields", lane_specs.ACCEPTED)
def test_accepted_lane_specs(fields: dict[str, Any]) -> None:
    spec(fields)


@pytest.mark.parametrize("fields", lane_specs.ACCEPTED)
def test_the_proxy_takes_every_accepted_lane_spec(fields: dict[str, Any]) -> None:
    """What the operator accepts and writes, the proxy loads: the same lanes, default and signal."""
    rendered = render.proxy_config(spec(fields))
    batching = proxy_config.validate(rendered).batching
    assert [lane.name for lane in batching.lane_list] == [
        lane["name"] for lane in rendered["batching"]["lanes"]
    ]
    assert batching.signal_lanes == rendered["batching"].get("signal_lanes", [])


@pytest.mark.parametrize(
    ("lane", "field"),
    [
        ({"name": "Batch"}, "name"),
        ({"name": "x" * 32}, "name"),
        ({"name": "b", "minShare": 0.95}, "minShare"),
        ({"name": "b", "minShare": -0.1}, "minShare"),
        ({"name": "b", "minShare": float("nan")}, "minShare"),
        ({"name": "b", "queueCapacity": 0}, "queueCapacity"),
        ({"name": "b", "weight": 0}, "weight"),
        ({"name": "b", "priority": 1}, "priority"),
    ],
)
def test_each_lane_field_is_bounded(lane: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as e:
        spec({"batching": {"lanes": [lane]}})
    assert str(e.value).startswith(f"spec.batching.lanes.0.{field}: ")


def test_at_most_eight_lanes() -> None:
    spec(lanes(*[(f"l{i}", 0) for i in range(8)]))
    with pytest.raises(SpecError) as e:
        spec(lanes(*[(f"l{i}", 0) for i in range(9)]))
    assert "spec.batching.lanes: " in str(e.value) and "at most 8" in str(e.value)


def test_lanes_render_into_the_batching_section() -> None:
    s = spec(
        {
            "batching": {
                "lanes": [
                    {"name": "interactive", "queueCapacity": 256, "minShare": 0, "weight": 4},
                    {"name": "batch", "queueCapacity": 8192, "minShare": 0.2},
                ],
                "defaultLane": "batch",
            },
            "autoscaling": {"lanes": ["interactive"]},
        }
    )
    batching = render.proxy_config(s)["batching"]
    assert batching["lanes"] == [
        {"name": "interactive", "queue_capacity": 256, "min_share": 0.0, "weight": 4},
        {"name": "batch", "queue_capacity": 8192, "min_share": 0.2},
    ]
    assert batching["default_lane"] == "batch"
    assert batching["signal_lanes"] == ["interactive"]


def test_without_lanes_the_config_is_what_it_was() -> None:
    batching = render.proxy_config(spec({}))["batching"]
    assert not {"lanes", "default_lane", "signal_lanes"} & set(batching)
    # Lanes without a signal choice: the signal counts every lane (the proxy's default).
    batching = render.proxy_config(spec(lanes(*TWO)))["batching"]
    assert "signal_lanes" not in batching and "default_lane" not in batching


@pytest.mark.parametrize(
    "change",
    [
        lanes(("interactive", 0), ("batch", 0.3)),
        lanes(*TWO, defaultLane="interactive"),
        {**lanes(*TWO), "autoscaling": {"lanes": ["interactive"]}},
        lanes(("batch", 0.1), ("interactive", 0)),
    ],
)
def test_a_change_of_lanes_is_applied_live(change: dict[str, Any]) -> None:
    before = render.proxy_config(spec(lanes(*TWO)))
    after = render.proxy_config(spec(change))
    assert after["version"] != before["version"]
    # The pods do not roll: batching is reloaded by the running proxy.
    assert render.restart_hash(after) == render.restart_hash(before)


def test_the_crd_says_what_the_operator_says() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    batching = schema["properties"]["batching"]
    messages = {r["message"] for r in batching["x-kubernetes-validations"]}
    messages |= {r["message"] for r in schema["x-kubernetes-validations"]}
    for name in ("LANES_UNIQUE", "DEFAULT_LANE_UNKNOWN", "MIN_SHARE_SUM", "SIGNAL_LANE_UNKNOWN"):
        assert getattr(spec_module, name) == getattr(lane_specs, name) in messages
    lane = batching["properties"]["lanes"]
    assert lane["maxItems"] == spec_module.MAX_LANES
    assert lane["items"]["properties"]["name"]["pattern"] == spec_module.LANE_PATTERN
    signal = schema["properties"]["autoscaling"]["properties"]["lanes"]
    assert signal["maxItems"] == spec_module.MAX_LANES
    assert signal["items"]["pattern"] == spec_module.LANE_PATTERN
    share = lane["items"]["properties"]["minShare"]
    assert share["maximum"] == spec_module.MAX_MIN_SHARE_SUM
