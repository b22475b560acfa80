"""The built-in autoscaler's arithmetic, HPA's algorithm on the proxies' queue depth: proposals,
tolerance, pods without a value, stabilization windows, rate policies, bounds, and whole
scenarios (steady load, spike, slow decay, flapping) played poll by poll."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from embedding_proxy_operator.logic.hpa import Decision, History, Recommendation, ScaleEvent, decide
from embedding_proxy_operator.logic.hpa_policy import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    Policy,
    RatePolicy,
    ScalingRules,
    policy_of,
)
from embedding_proxy_operator.model.spec import parse

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_000_000.0  # any clock; the autoscaler only compares times
POLL = 5.0

# No stabilization and no rate limit: the proposal itself comes out.
INSTANT = Policy(
    max_replicas=100,
    scale_up=ScalingRules(0, "Max", (RatePolicy("Percent", 10_000, 1),)),
    scale_down=ScalingRules(0, "Max", (RatePolicy("Percent", 100, 1),)),
)


def pods(*values: float | None) -> dict[str, float | None]:
    return {f"tei-{i}": v for i, v in enumerate(values)}


def even(load: float, replicas: int) -> dict[str, float | None]:
    """`load` queued inputs spread over `replicas` pods, as the TEI Service spreads them."""
    return pods(*[load / replicas] * replicas)


def fresh(policy: Policy, current: int, samples: dict[str, float | None]) -> Decision:
    """A decision with an empty history (not a first sight: no seeded recommendation)."""
    return decide(current, samples, policy, History(), T0)


@dataclass
class Run:
    replicas: list[int]
    decisions: list[Decision]

    @property
    def changes(self) -> int:
        return sum(1 for d in self.decisions if d.scale)


def play(
    policy: Policy, start: int, load: Callable[[float], float], seconds: float, poll: float = POLL
) -> Run:
    """Polls every `poll` seconds for `seconds`; each decision is applied, as the operator does,
    and the next poll sees the load spread over the new replica count."""
    current, history = start, None
    replicas, decisions = [], []
    for i in range(int(seconds / poll) + 1):
        now = T0 + i * poll
        d = decide(current, even(load(i * poll), current), policy, history, now)
        history, current = d.history, d.desired_replicas
        replicas.append(current)
        decisions.append(d)
    return Run(replicas, decisions)


# --- the proposal (no stabilization, no rate limit) ---------------------------------------------


@pytest.mark.parametrize(
    ("current", "samples", "expected", "code"),
    [
        # ceil(current x observed / target)
        (3, pods(128, 128, 128), 6, "DesiredWithinRange"),
        (3, pods(100, 100, 100), 5, "DesiredWithinRange"),  # ceil(3 x 1.5625) = ceil(4.69)
        (4, pods(16, 16, 16, 16), 1, "DesiredWithinRange"),
        (4, pods(0, 0, 0, 0), 1, "TooFewReplicas"),  # proposes 0; minReplicas 1
        (2, pods(64, 64), 2, "WithinTolerance"),
        # exact arithmetic: 3 pods at exactly the target is 3, not ceil(3.0000000001)
        (3, pods(64.0, 64.0, 64.0), 3, "WithinTolerance"),
        # uneven pods: the mean counts
        (2, pods(0, 256), 4, "DesiredWithinRange"),
    ],
)
def test_proposal_is_hpa_formula(
    current: int, samples: dict[str, float | None], expected: int, code: str
) -> None:
    d = fresh(INSTANT, current, samples)
    assert (d.desired_replicas, d.code) == (expected, code)
    assert d.observed_average == pytest.approx(sum(v or 0 for v in samples.values()) / len(samples))


@pytest.mark.parametrize(
    ("per_pod", "tolerance", "expected"),
    [
        (110, 0.1, 10),  # ratio 1.1: at the edge of the band, inclusive
        (90, 0.1, 10),  # ratio 0.9: the other edge
        (111, 0.1, 12),  # ratio 1.11: just out, ceil(11.1)
        (89, 0.1, 9),  # ratio 0.89: just out, ceil(8.9)
        (103, 0.1, 10),
        (103, 0.0, 11),  # no band: any difference scales
        (120, 0.2, 10),  # ratio 1.2 within a 20% band
    ],
)
def test_tolerance_band(per_pod: float, tolerance: float, expected: int) -> None:
    policy = Policy(
        max_replicas=100,
        target_queue_depth_per_pod=100,
        tolerance=tolerance,
        scale_up=INSTANT.scale_up,
        scale_down=INSTANT.scale_down,
    )
    d = fresh(policy, 10, pods(*[per_pod] * 10))
    assert d.desired_replicas == expected
    if expected == 10:
        assert d.code == "WithinTolerance" and "tolerance" in d.reason


# --- pods without a value -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "samples", "expected", "code", "why"),
    [
        # Scale-down: the silent pod counts as at the target: (10+10+64)/3 = 28 -> ceil(3 x 0.44)
        # = 2, where ignoring it would give ceil(2 x 0.16) = 1.
        (3, pods(10, 10, None), 2, "DesiredWithinRange", "at target on a scale-down"),
        # Scale-down whose recount lands within tolerance: no change.
        (2, pods(60, None), 2, "MissingPods", "scale-down recount within tolerance"),
        # Scale-up: silent pods count as idle; (80+0+0)/3 < target reverses the direction, so no
        # change, where ignoring them would scale an overloaded Deployment down to 2.
        (3, pods(80, None, None), 3, "MissingPods", "reversal on a scale-up"),
        # Scale-up that stays a scale-up: ceil(3 x (200+200+0)/3/64) = ceil(6.25)
        (3, pods(200, 200, None), 7, "DesiredWithinRange", "idle on a scale-up"),
        # Within tolerance among the measured, but a silent pod exists: it is recounted at 0,
        # which reverses the direction: no change.
        (3, pods(66, 66, None), 3, "MissingPods", "recount reverses"),
        # Replicas the target should have but that are not listed yet count as missing too.
        (4, pods(200), 4, "MissingPods", "unlisted replicas"),
        (4, pods(200, 200, 200), 10, "DesiredWithinRange", "unlisted replica idle"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_pods_without_a_value_are_counted_conservatively(
    current: int, samples: dict[str, float | None], expected: int, code: str, why: str
) -> None:
    d = fresh(INSTANT, current, samples)
    assert (d.desired_replicas, d.code) == (expected, code), why
    assert d.pods_missing >= 1


def test_no_values_at_all_keeps_the_replicas() -> None:
    d = fresh(INSTANT, 4, pods(None, None, None, None))
    assert (d.desired_replicas, d.recommendation, d.code) == (4, None, "NoMetrics")
    # No proposal is recorded, so nothing can hold a later decision back.
    assert d.history.recommendations == ()
    d = fresh(INSTANT, 4, {})
    assert (d.desired_replicas, d.code) == (4, "NoMetrics")


def test_unusable_values_count_as_missing() -> None:
    d = fresh(INSTANT, 2, pods(float("nan"), 128))
    assert d.pods_measured == 1 and d.pods_missing == 1
    d = fresh(INSTANT, 2, pods(float("inf"), -3))
    assert d.code == "NoMetrics"


# --- bounds -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "samples", "expected", "code"),
    [
        (4, pods(1000, 1000, 1000, 1000), 8, "TooManyReplicas"),  # proposes 63, max 8
        (4, pods(1, 1, 1, 1), 2, "TooFewReplicas"),  # proposes 1, min 2
        (12, pods(None), 8, "AboveMaxReplicas"),  # at once, with or without metrics
        (1, pods(0), 2, "BelowMinReplicas"),
        (5, pods(64, 64, 64, 64, 64), 5, "WithinTolerance"),
    ],
)
def test_min_and_max(
    current: int, samples: dict[str, float | None], expected: int, code: str
) -> None:
    policy = Policy(
        min_replicas=2, max_replicas=8, scale_up=INSTANT.scale_up, scale_down=INSTANT.scale_down
    )
    d = fresh(policy, current, samples)
    assert (d.desired_replicas, d.code) == (expected, code)


def test_zero_replicas_are_left_alone() -> None:
    # HPA: a target at 0 replicas has scaling disabled. With the proxies in the scaled pods
    # there is nothing to measure at 0 either, so minReplicas 0 does not change that.
    for min_replicas in (0, 1):
        d = fresh(Policy(min_replicas=min_replicas), 0, {})
        assert (d.desired_replicas, d.code) == (0, "ScalingDisabled")
        assert not d.scale


def test_the_autoscaler_never_takes_its_own_signal_to_zero() -> None:
    # minReplicas 0 with the proxies in the scaled pods: going to 0 would lose the signal for
    # good, so the floor is 1 (a person may still scale to 0; the autoscaler then stands back).
    policy = Policy(min_replicas=0, scale_up=INSTANT.scale_up, scale_down=INSTANT.scale_down)
    d = fresh(policy, 3, pods(0, 0, 0))
    assert (d.desired_replicas, d.code) == (1, "TooFewReplicas")


# --- proxies beside clients: the sum is the load on the scaled Deployment ------------------------

ELSEWHERE = Policy(
    min_replicas=0,
    max_replicas=20,
    # From 0 replicas only a Pods policy allows growth (any percentage of 0 is 0).
    scale_up=ScalingRules(0, "Max", (RatePolicy("Percent", 10_000, 1), RatePolicy("Pods", 100, 1))),
    scale_down=INSTANT.scale_down,
    signal_in_scaled_pods=False,
)


@pytest.mark.parametrize(
    ("current", "samples", "expected", "code"),
    [
        (2, pods(40, 40, 40, 40, 40), 4, "DesiredWithinRange"),  # ceil(200 / 64)
        (2, pods(30, 30, 30, 30), 2, "WithinTolerance"),  # 120 / (64 x 2) = 0.94
        (3, pods(0, 0, 0, None), 0, "DesiredWithinRange"),  # idle clients; minReplicas 0
        (0, pods(65, 65), 3, "DesiredWithinRange"),  # from zero: ceil(130 / 64)
        (0, pods(0, 0), 0, "DesiredWithinRange"),
        (2, pods(None, None), 2, "NoMetrics"),
    ],
)
def test_signal_from_proxies_beside_clients(
    current: int, samples: dict[str, float | None], expected: int, code: str
) -> None:
    d = fresh(ELSEWHERE, current, samples)
    assert (d.desired_replicas, d.code) == (expected, code)


# --- stabilization ------------------------------------------------------------------------------


def test_scale_down_waits_for_the_highest_recommendation_to_leave_the_window() -> None:
    policy = Policy()  # HPA's defaults: 300 s down window
    high = decide(3, pods(128, 128, 128), policy, History(), T0)
    assert high.desired_replicas == 6
    history = high.history
    for t in (5, 150, 299.9):
        d = decide(6, even(60, 6), policy, history, T0 + t)
        assert (d.desired_replicas, d.code) == (6, "ScaleDownStabilized"), t
        assert d.recommendation == 1
        history = d.history
    d = decide(6, even(60, 6), policy, history, T0 + 300)
    assert (d.desired_replicas, d.code) == (1, "DesiredWithinRange")


def test_scale_down_follows_the_window_maximum_step_by_step() -> None:
    policy = Policy(max_replicas=20)
    history = History(
        recommendations=(
            Recommendation(T0 - 250, 9),
            Recommendation(T0 - 100, 7),
            Recommendation(T0 - 10, 4),
        )
    )
    assert decide(10, even(0, 10), policy, history, T0).desired_replicas == 9
    assert decide(9, even(0, 9), policy, history, T0 + 60).desired_replicas == 7
    assert decide(7, even(0, 7), policy, history, T0 + 220).desired_replicas == 4
    assert decide(4, even(0, 4), policy, history, T0 + 300).desired_replicas == 1


def test_scale_up_window_uses_the_lowest_recommendation() -> None:
    policy = Policy(max_replicas=20, scale_up=ScalingRules(60, "Max", DEFAULT_SCALE_UP.policies))
    # 60 s at the target, then a spike from t = 60.
    run = play(policy, 2, lambda t: 128 if t < 60 else 512, seconds=120)
    # The spike has to outlast the window (the last low recommendation was at t = 55) before
    # anything scales: held at the lowest recommendation of the window until t = 115.
    assert run.replicas[:23] == [2] * 23
    assert {d.code for d in run.decisions[12:23]} == {"ScaleUpStabilized"}
    assert run.replicas[23] == 6  # t = 115: the rate policies allow +4


def test_first_sight_never_scales_down_before_a_full_window() -> None:
    # With no history (a new CR, or the operator restarted without one), the current count is
    # recorded as a recommendation, as HPA does, so an idle Deployment waits the window out.
    d = decide(5, even(0, 5), Policy(), None, T0)
    assert (d.desired_replicas, d.code) == (5, "ScaleDownStabilized")
    assert decide(5, even(0, 5), Policy(), d.history, T0 + 299).desired_replicas == 5
    assert decide(5, even(0, 5), Policy(), d.history, T0 + 300).desired_replicas == 1
    # ... while scaling up is not held back.
    assert decide(2, even(512, 2), Policy(), None, T0).desired_replicas == 6


# --- rate policies ------------------------------------------------------------------------------


def up_policy(select: str, *policies: RatePolicy) -> Policy:
    return Policy(max_replicas=1000, scale_up=ScalingRules(0, select, policies))  # type: ignore[arg-type]


def down_policy(select: str, *policies: RatePolicy) -> Policy:
    return Policy(max_replicas=1000, scale_down=ScalingRules(0, select, policies))  # type: ignore[arg-type]


PODS4 = RatePolicy("Pods", 4, 15)
PCT100 = RatePolicy("Percent", 100, 15)


@pytest.mark.parametrize(
    ("policy", "current", "expected"),
    [
        (up_policy("Max", PODS4), 2, 6),
        (up_policy("Max", PCT100), 2, 4),
        (up_policy("Max", PCT100, PODS4), 2, 6),  # Pods allows more
        (up_policy("Max", PCT100, PODS4), 10, 20),  # Percent allows more
        (up_policy("Min", PCT100, PODS4), 2, 4),
        (up_policy("Min", PCT100, PODS4), 10, 14),
        (up_policy("Disabled"), 10, 10),
        (up_policy("Max", RatePolicy("Percent", 10, 15)), 3, 4),  # ceil(3.3): always one more
        (up_policy("Max", RatePolicy("Percent", 10, 15)), 10, 11),  # exactly 11, no float drift
    ],
)
def test_scale_up_rate_policies(policy: Policy, current: int, expected: int) -> None:
    d = fresh(policy, current, even(100_000, current))
    assert d.desired_replicas == expected
    if expected != current:
        assert d.code == "ScaleUpLimit"


@pytest.mark.parametrize(
    ("policy", "current", "expected"),
    [
        (down_policy("Max", RatePolicy("Pods", 1, 60)), 10, 9),
        (down_policy("Max", RatePolicy("Percent", 50, 60)), 10, 5),
        (down_policy("Max", RatePolicy("Percent", 50, 60)), 5, 2),  # trunc(2.5)
        (down_policy("Max", RatePolicy("Percent", 50, 60), RatePolicy("Pods", 2, 60)), 10, 5),
        (down_policy("Min", RatePolicy("Percent", 50, 60), RatePolicy("Pods", 2, 60)), 10, 8),
        (down_policy("Disabled"), 10, 10),
    ],
)
def test_scale_down_rate_policies(policy: Policy, current: int, expected: int) -> None:
    d = fresh(policy, current, even(0, current))
    assert d.desired_replicas == expected


def test_rate_policies_count_changes_within_their_period() -> None:
    policy = up_policy("Max", PODS4)
    d = decide(2, even(10_000, 2), policy, History(), T0)
    assert d.desired_replicas == 6
    # 5 s later the 4 pods added count against this period: nothing more until it is over.
    d2 = decide(6, even(10_000, 6), policy, d.history, T0 + 5)
    assert (d2.desired_replicas, d2.code) == (6, "ScaleUpLimit")
    d3 = decide(6, even(10_000, 6), policy, d2.history, T0 + 15)
    assert d3.desired_replicas == 10
    # A scale-down within the period gives its room back to a scale-up (HPA counts both).
    history = History(scale_ups=(ScaleEvent(T0 - 5, 4),), scale_downs=(ScaleEvent(T0 - 3, 2),))
    assert decide(4, even(10_000, 4), policy, history, T0).desired_replicas == 6


def test_a_failed_scale_is_not_counted_against_the_rate() -> None:
    d = decide(2, even(10_000, 2), up_policy("Max", PODS4), History(), T0)
    assert d.history.scale_ups == (ScaleEvent(T0, 4),)
    assert d.history_if_not_applied.scale_ups == ()
    # Both keep the proposal for the stabilization windows.
    assert d.history.recommendations == d.history_if_not_applied.recommendations


# --- scenarios, poll by poll --------------------------------------------------------------------


def test_steady_load_never_scales() -> None:
    run = play(Policy(), 3, lambda t: 3 * 64, seconds=600)
    assert set(run.replicas) == {3}
    run = play(Policy(), 3, lambda t: 3 * 68 if int(t / POLL) % 2 else 3 * 60, seconds=600)
    assert set(run.replicas) == {3}  # noise within the 10% band


def test_spike_scales_up_on_the_first_poll_and_doubles_per_period() -> None:
    run = play(Policy(max_replicas=40), 2, lambda t: 0 if t < 10 else 2000, seconds=60)
    # t = 0, 5: idle (held at 2 by the first-sight recommendation); t = 10: spike
    assert run.replicas[:2] == [2, 2]
    assert run.replicas[2] == 6  # +4 pods beats +100% from 2
    assert run.replicas[3] == 6  # the period of 15 s is not over
    assert run.replicas[5] == 12  # t = 25: doubled
    assert run.replicas[8] == 24  # t = 40
    assert run.replicas[-1] == 32  # ceil(2000 / 64), reached and held
    assert run.replicas == sorted(run.replicas)


def test_slow_decay_scales_down_a_window_behind_the_load() -> None:
    # Load falls from 640 to 64 over 10 minutes, then stays at 64.
    def load(t: float) -> float:
        return max(64.0, 640 - 576 * t / 600)

    run = play(Policy(), 10, load, seconds=1500)
    assert run.replicas == sorted(run.replicas, reverse=True)  # never back up
    first_drop = next(i for i, r in enumerate(run.replicas) if r < 10)
    assert first_drop * POLL >= 300  # not before the window has passed
    # At every poll, no fewer replicas than the load of the last 300 s asked for at its peak.
    for i, replicas in enumerate(run.replicas):
        t = i * POLL
        peak = max(load(t - s) for s in range(0, 300, 5) if t - s >= 0)
        assert replicas >= math.ceil(peak / 64 / 1.1), t
    assert run.replicas[-1] == 1


def test_flapping_load_scales_up_once_and_never_flaps() -> None:
    def load(t: float) -> float:
        return 300 if int(t / POLL) % 2 == 0 else 150

    run = play(Policy(), 3, load, seconds=900)
    assert run.replicas[0] == 5  # ceil(3 x 100 / 64)
    assert set(run.replicas) == {5}
    assert run.changes == 1
    # Without a scale-down window the same input flaps all the time.
    eager = Policy(scale_down=ScalingRules(0, "Max", DEFAULT_SCALE_DOWN.policies))
    assert play(eager, 3, load, seconds=900).changes > 50


# --- history ------------------------------------------------------------------------------------


def test_history_is_json_and_round_trips() -> None:
    run = play(Policy(), 2, lambda t: 2000 if t < 60 else 0, seconds=200)
    history = run.decisions[-1].history
    text = json.dumps(history.to_json())
    assert History.from_json(json.loads(text)) == history
    assert History.from_json(None) is None
    assert History.from_json({"recommendations": [{"at": "soon"}]}) is None
    assert History.from_json({}) == History()


def test_history_keeps_only_what_a_window_or_period_can_count() -> None:
    run = play(Policy(), 2, lambda t: 2000 if t < 60 else 0, seconds=1200)
    h = run.decisions[-1].history
    now = T0 + 1200
    assert all(r.at > now - 300 for r in h.recommendations)
    assert all(e.at > now - 15 for e in (*h.scale_ups, *h.scale_downs))
    assert len(h.recommendations) <= 300 / POLL


# --- spec.autoscaling -> Policy -----------------------------------------------------------------


def policy_from_spec(autoscaling: dict[str, Any], target_name: str = "tei") -> Policy:
    """The policy of an EmbeddingProxy with this `spec.autoscaling`, through the one parser."""
    return policy_of(parse({"targetRef": {"name": target_name}, "autoscaling": autoscaling}))


def test_policy_from_an_empty_spec_is_hpas_defaults() -> None:
    policy = policy_from_spec({})
    assert policy == Policy()
    assert policy.scale_up == DEFAULT_SCALE_UP and policy.scale_down == DEFAULT_SCALE_DOWN


def test_policy_from_spec_maps_every_field() -> None:
    spec = {
        "enabled": True,
        "provider": "Builtin",
        "minReplicas": 2,
        "maxReplicas": 12,
        "targetQueueDepthPerPod": 32,
        "tolerancePercent": 5,
        "pollSeconds": 2,
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tei"},
        "behavior": {
            "scaleUp": {
                "stabilizationWindowSeconds": 30,
                "selectPolicy": "Min",
                "policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}],
            },
            # Fields left out take that direction's defaults, as HPA's do.
            "scaleDown": {"stabilizationWindowSeconds": 60},
        },
    }
    policy = policy_from_spec(spec, target_name="tei")
    assert policy == Policy(
        min_replicas=2,
        max_replicas=12,
        target_queue_depth_per_pod=32,
        tolerance=0.05,
        scale_up=ScalingRules(30, "Min", (RatePolicy("Pods", 2, 30),)),
        scale_down=ScalingRules(60, "Max", DEFAULT_SCALE_DOWN.policies),
        signal_in_scaled_pods=True,
    )
    other = policy_from_spec({**spec, "scaleTargetRef": {"name": "gpu"}}, target_name="tei")
    assert other.signal_in_scaled_pods is False


def crd_autoscaling_defaults() -> dict[str, Any]:
    """`spec.autoscaling: {}` after the API server applied the CRD's defaults."""
    crd = yaml.safe_load((ROOT / "manifests" / "crd.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    node = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["autoscaling"]

    def fill(node: dict[str, Any], value: Any) -> Any:
        if node.get("type") == "object" and isinstance(value, dict):
            for key, sub in (node.get("properties") or {}).items():
                if key not in value and "default" in sub:
                    value[key] = json.loads(json.dumps(sub["default"]))
                if key in value:
                    value[key] = fill(sub, value[key])
        return value

    return fill(node, {})


def test_the_crds_defaults_are_the_policys_defaults() -> None:
    assert policy_from_spec(crd_autoscaling_defaults()) == Policy()


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"minReplicas": 5, "maxReplicas": 2}, "minReplicas"),
        ({"maxReplicas": 0}, "maxReplicas"),
        ({"targetQueueDepthPerPod": 0}, "targetQueueDepthPerPod"),
        ({"targetQueueDepthPerPod": 2.5}, "targetQueueDepthPerPod"),
        (
            {"behavior": {"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Fastest"}}},
            "scaleUp",
        ),
        (
            {
                "behavior": {
                    "scaleDown": {
                        "stabilizationWindowSeconds": 300,
                        "policies": [{"type": "Pod", "value": 1, "periodSeconds": 1}],
                    }
                }
            },
            "scaleDown.policies.0",
        ),
        (
            {
                "behavior": {
                    "scaleDown": {
                        "stabilizationWindowSeconds": 300,
                        "policies": [{"type": "Pods", "value": 0, "periodSeconds": 1}],
                    }
                }
            },
            "scaleDown.policies.0",
        ),
    ],
)
def test_policy_from_spec_names_the_bad_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        policy_from_spec(spec)


# --- properties ---------------------------------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    min_replicas = draw(st.integers(0, 10))
    max_replicas = draw(st.integers(max(min_replicas, 1), 30))

    def rules(window: int) -> ScalingRules:
        items = draw(
            st.lists(
                st.builds(
                    RatePolicy,
                    st.sampled_from(["Pods", "Percent"]),
                    st.integers(1, 300),
                    st.integers(1, 120),
                ),
                min_size=1,
                max_size=3,
            )
        )
        select = draw(st.sampled_from(["Max", "Min", "Disabled"]))
        return ScalingRules(draw(st.integers(0, window)), select, tuple(items))

    return Policy(
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_queue_depth_per_pod=draw(st.integers(1, 200)),
        tolerance=draw(st.sampled_from([0.0, 0.05, 0.1, 0.2])),
        scale_up=rules(120),
        scale_down=rules(600),
        signal_in_scaled_pods=draw(st.booleans()),
    )


values = st.one_of(st.none(), st.floats(0, 5000, allow_nan=False))


@settings(deadline=None)  # examples: the profile (tests/conftest.py)
@given(
    policy=policies(),
    start=st.integers(1, 40),
    steps=st.lists(
        st.tuples(st.floats(0.5, 120), st.lists(values, max_size=12)), min_size=1, max_size=15
    ),
)
def test_replicas_stay_within_bounds_whatever_the_input(
    policy: Policy, start: int, steps: Sequence[tuple[float, list[float | None]]]
) -> None:
    current, history, now = start, None, T0
    for dt, samples in steps:
        now += dt
        d = decide(current, pods(*samples), policy, history, now)
        if d.code == "ScalingDisabled":
            assert current == d.desired_replicas == 0
        else:
            assert policy.floor <= d.desired_replicas <= policy.max_replicas, d.reason
        json.dumps(d.history.to_json())
        history, current = d.history, d.desired_replicas


@settings(deadline=None)  # examples: the profile (tests/conftest.py)
@given(
    policy=policies(),
    data=st.data(),
)
def test_within_tolerance_nothing_changes(policy: Policy, data: st.DataObject) -> None:
    current = data.draw(st.integers(max(policy.floor, 1), policy.max_replicas))
    target = policy.target_queue_depth_per_pod
    # Whole-number ratios to the target inside the band (both edges included).
    band = round(policy.tolerance * 100)
    percent = data.draw(st.integers(100 - band, 100 + band))
    per_pod = target * percent / 100
    if not policy.signal_in_scaled_pods:
        samples = pods(per_pod * current)  # one proxy elsewhere carrying all of it
    else:
        samples = pods(*[per_pod] * current)
    # Floats such as 7.7 are a hair above 7.7; keep to ratios truly inside the band.
    total = sum(Fraction(v) for v in samples.values() if v is not None)
    assume(abs(total / (target * current) - 1) <= Fraction(band, 100))
    d = decide(current, samples, policy, None, T0)
    assert d.desired_replicas == current, d.reason
    assert d.recommendation == current


@settings(deadline=None)  # examples: the profile (tests/conftest.py)
@given(
    policy=policies(),
    data=st.data(),
)
def test_load_above_the_band_never_scales_down_and_below_never_up(
    policy: Policy, data: st.DataObject
) -> None:
    current = data.draw(st.integers(max(policy.floor, 1), policy.max_replicas))
    target = policy.target_queue_depth_per_pod
    high = data.draw(st.booleans())
    factor = data.draw(st.floats(1.25, 10) if high else st.floats(0, 0.75))
    samples = pods(*[target * factor] * current)
    d = decide(current, samples, policy, History(), T0)
    if high:
        assert d.desired_replicas >= current
    else:
        assert d.desired_replicas <= current
