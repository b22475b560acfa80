"""Priority-lane specs and what both sides say of them: the operator's own check (tests/unit) and
the CRD's rules on a real API server (tests/chart) run the same table, with the same messages."""

from __future__ import annotations

from typing import Any

LANES_UNIQUE = "batching.lanes must have unique names"
DEFAULT_LANE_UNKNOWN = "batching.defaultLane must name one of batching.lanes"
MIN_SHARE_SUM = "the minShare of all batching.lanes must add up to at most 0.9"
SIGNAL_LANE_UNKNOWN = "autoscaling.lanes must name lanes of batching.lanes"


def lanes(*entries: tuple[str, float], **batching: Any) -> dict[str, Any]:
    """A spec fragment: lanes by (name, minShare), highest first, and other batching fields."""
    listed = [{"name": n, "minShare": s, "queueCapacity": 64} for n, s in entries]
    return {"batching": {"lanes": listed, **batching}}


TWO = (("interactive", 0), ("batch", 0.1))

REFUSED: list[tuple[dict[str, Any], str]] = [
    (lanes(("a", 0.1), ("b", 0.1), ("a", 0.1)), LANES_UNIQUE),
    (lanes(*TWO, defaultLane="bulk"), DEFAULT_LANE_UNKNOWN),
    ({"batching": {"defaultLane": "batch"}}, DEFAULT_LANE_UNKNOWN),
    (lanes(("a", 0.5), ("b", 0.3), ("c", 0.2)), MIN_SHARE_SUM),
    (lanes(*[(f"l{i}", 0.12) for i in range(8)]), MIN_SHARE_SUM),
    ({**lanes(*TWO), "autoscaling": {"lanes": ["interactive", "bulk"]}}, SIGNAL_LANE_UNKNOWN),
    ({"autoscaling": {"lanes": ["interactive"]}}, SIGNAL_LANE_UNKNOWN),
]

ACCEPTED: list[dict[str, Any]] = [
    lanes(*TWO),
    {**lanes(*TWO, defaultLane="batch"), "autoscaling": {"lanes": ["interactive"]}},
    # Sums that are 0.9 in decimals but a hair above in binary fractions.
    lanes(("a", 0.1), ("b", 0.2), ("c", 0.6)),
    lanes(*[(f"l{i}", 0.1125) for i in range(8)]),
    lanes(("only", 0.9)),
    {"batching": {"lanes": [{"name": "x"}], "defaultLane": "x"}},
]
