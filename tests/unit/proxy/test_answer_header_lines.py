"""TEI's answer headers, per caller (api/answer_headers.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from embedding_proxy.api.answer_headers import CallTimes, characters, for_caller


@dataclass
class Answer:
    tokens: int
    times: CallTimes | None


def lines(raw: bytes) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in raw.decode().splitlines())


def test_times_are_read_from_teis_headers_and_averaged_over_a_callers_inputs() -> None:
    kind = {"x-compute-type": "gpu+optimized"}
    a = CallTimes.of({**kind, "x-queue-time": "4", "x-inference-time": "10"})
    b = CallTimes.of({**kind, "x-queue-time": "8", "x-inference-time": "20"})
    arrived = time.perf_counter() - 0.040
    got = lines(for_caller(["abcd", "efghi"], [Answer(3, a), Answer(4, b)], 0.005, arrived))
    total = int(got["x-total-time"])
    assert 40 <= total < 1000 and got["x-compute-time"] == got["x-total-time"]
    assert {k: v for k, v in got.items() if k not in ("x-total-time", "x-compute-time")} == {
        "x-compute-type": "gpu+optimized",
        "x-compute-characters": "9",
        "x-compute-tokens": "7",
        "x-tokenization-time": "0",
        "x-queue-time": "11",  # the calls' average, plus the wait in the proxy's queue
        "x-inference-time": "15",
    }
    one = lines(for_caller(["héllo"], [Answer(2, a)], 0.0, time.perf_counter()))
    assert (one["x-compute-characters"], one["x-compute-tokens"], one["x-queue-time"]) == (
        "5",
        "2",
        "4",
    )


def test_no_headers_from_upstream_none_made_up() -> None:
    assert CallTimes.of({}) is None
    assert CallTimes.of({"x-compute-type": "bad\r\nx-injected: 1"}) is None
    assert for_caller(["a"], [Answer(1, None)], 0.0, time.perf_counter()) == b""
    assert for_caller(["a", "b"], [Answer(1, None)] * 2, 0.0, time.perf_counter()) == b""


def test_characters_as_tei_counts_them() -> None:
    assert characters(["héllo", [1, 2, 3], ["ab", "cde"], ["f"]]) == 5 + 3 + 5 + 1
