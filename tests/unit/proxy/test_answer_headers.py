"""TEI's answer headers, per caller (api/answer_headers.py)."""

from __future__ import annotations

from embedding_proxy.api.answer_headers import CallTimes, characters, render


def test_times_are_read_from_teis_headers_and_averaged_over_a_callers_inputs() -> None:
    a = CallTimes.of(
        {"x-compute-type": "gpu+optimized", "x-queue-time": "4", "x-inference-time": "10"}
    )
    b = CallTimes.of(
        {"x-compute-type": "gpu+optimized", "x-queue-time": "8", "x-inference-time": "20"}
    )
    lines = render([a, b], tokens=7, chars=9, waited_ms=5, total_ms=40).decode()
    assert lines.splitlines() == [
        "x-compute-type: gpu+optimized",
        "x-compute-time: 40",
        "x-compute-characters: 9",
        "x-compute-tokens: 7",
        "x-total-time: 40",
        "x-tokenization-time: 0",
        "x-queue-time: 11",  # the calls' average, plus the wait in the proxy's queue
        "x-inference-time: 15",
    ]


def test_no_headers_from_upstream_none_made_up() -> None:
    assert CallTimes.of({}) is None
    assert CallTimes.of({"x-compute-type": "bad\r\nx-injected: 1"}) is None
    assert render([None], tokens=1, chars=1, waited_ms=0, total_ms=1) == b""


def test_characters_as_tei_counts_them() -> None:
    assert characters(["héllo", [1, 2, 3], ["ab", "cde"], ["f"]]) == 5 + 3 + 5 + 1
