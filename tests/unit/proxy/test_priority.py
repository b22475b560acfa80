"""Which lane a request gets: its X-Priority header, its key's lane, the default lane."""

from __future__ import annotations

import pytest

from embedding_proxy.api.errors import ProxyError
from embedding_proxy.callers.priority import Key, Priorities
from embedding_proxy.config.settings import BatchingConfig

LANES = [
    {"name": "interactive", "queue_capacity": 10},
    {"name": "normal", "queue_capacity": 10},
    {"name": "batch", "queue_capacity": 10, "min_share": 0.1},
]
P = Priorities(BatchingConfig(lanes=LANES, default_lane="normal"))  # type: ignore[arg-type]

# (case, header, key, wanted lane or error status)
CASES = [
    ("no header, no key: the default lane", None, None, "normal"),
    ("the header names any lane without a key", "interactive", None, "interactive"),
    ("spaces around the name are fine", " batch ", None, "batch"),
    ("an unknown lane is a clear 400", "urgent", None, 400),
    ("names are exact", "Interactive", None, 400),
    ("a key's lane is its lane by default", None, Key("k", "batch"), "batch"),
    ("a key may ask for a lower lane", "batch", Key("k", "normal"), "batch"),
    ("a key may not ask for a higher lane", "interactive", Key("k", "normal"), 403),
    ("a key without a lane: header or default", None, Key("k", None, 5), "normal"),
    ("a key naming a lane gone from the config: the lowest", None, Key("k", "old"), "batch"),
]


@pytest.mark.parametrize(
    ("header", "key", "wanted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_lane_of_a_request(header: str | None, key: Key | None, wanted: str | int) -> None:
    if isinstance(wanted, int):
        with pytest.raises(ProxyError) as info:
            P.who(header, key, "10.0.0.1")
        assert info.value.status == wanted
        assert "X-Priority" in info.value.message
    else:
        assert P.who(header, key, "10.0.0.1")[0] == wanted


def test_the_caller_is_the_key_or_else_the_address() -> None:
    assert P.who(None, Key("secret", None, 4), "10.0.0.1") == ("normal", "secret", 4)
    assert P.who(None, None, "10.0.0.1") == ("normal", "10.0.0.1", None)
    assert P.who(None, None, None)[1] == "unknown"
