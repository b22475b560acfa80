"""The settings of priority lanes and of the options an API key carries: the parts of the
config that lanes add (README, "Priority lanes")."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

LANE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
MAX_SHARES = 0.9  # min_share of all lanes together: at least a tenth of each batch stays free
MAX_WEIGHT = 1000  # key_line spells it out


class LaneConfig(BaseModel):
    """One priority lane (see README, "Priority lanes")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=LANE_NAME.pattern, description="Lower-case name, as X-Priority says.")
    queue_capacity: int = Field(ge=1, description="Inputs this lane holds waiting; beyond, 429.")
    min_share: float = Field(
        0.0, ge=0, le=MAX_SHARES, description="Share of each batch it gets when it has work."
    )
    weight: int = Field(
        1, ge=1, le=MAX_WEIGHT, description="A caller's weight in this lane unless its key says."
    )


def lane_of(text: str) -> dict[str, str]:
    """`name:capacity[:min_share[:weight]]`, the compact form for flags and the environment."""
    parts = text.strip().split(":")
    if not 2 <= len(parts) <= 4:
        raise ValueError(f"lane {text!r}: expected name:queue_capacity[:min_share[:weight]]")
    return dict(zip(("name", "queue_capacity", "min_share", "weight"), parts, strict=False))


def names(value: Any) -> Any:
    """A comma-separated string (flag, environment) as a list."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def default_lanes(queue_capacity: int) -> list[LaneConfig]:
    """Without `lanes`: everything that names no lane is interactive, as before lanes existed;
    `batch` holds as many inputs again and gets a tenth of each batch while it has work."""
    return [
        LaneConfig(name="interactive", queue_capacity=queue_capacity),
        LaneConfig(name="batch", queue_capacity=queue_capacity, min_share=0.1),
    ]


def key_line(line: str) -> tuple[str, str | None, int | None]:
    """(key, lane, weight) of `KEY [lane=NAME] [weight=N]`; the key is the first word."""
    words = line.split()
    if not words:
        raise ValueError("an API key is empty")
    key, *options = words
    lane: str | None = None
    weight: int | None = None
    for option in options:
        name, _, value = option.partition("=")
        if name == "lane" and LANE_NAME.match(value) and lane is None:
            lane = value
        elif name == "weight" and weight is None and value.isdigit() and 0 < int(value) <= 1000:
            weight = int(value)
        else:
            # Not quoted: a key with a space in it would be half in the log.
            raise ValueError(
                f"an API key's options, after it and a space, are lane=NAME and "
                f"weight=1..{MAX_WEIGHT}, each once"
            )
    return key, lane, weight
