"""TEI's answer headers on the batched routes, each caller its own share. TEI sets them on every
inference answer (router/src/lib.rs, `ResponseMetadata` into a `HeaderMap`; values in whole
milliseconds): `x-compute-type`, `x-compute-time` and `x-total-time` (arrival to answer),
`x-compute-characters` and `x-compute-tokens` (the request's inputs), and, averaged over the
request's inputs, `x-tokenization-time`, `x-queue-time` and `x-inference-time`. One upstream call
carries many callers' inputs, so the proxy derives each caller's from the calls its inputs went in:
its own characters (counted as TEI counts them), its share of each call's tokens, the calls' own
tokenization, queue and inference times (averaged over its inputs, as TEI averages), plus, in
`x-queue-time`, the longest time its inputs waited in the proxy's queue, and its own arrival to
answer as the total and compute time. Pure: no I/O."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

_TYPE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z/]{1,64}")  # a header-safe token, as TEI's
# Per call: what all its inputs share, written once. Per caller: its own figures.
_SHARED = b"x-compute-type: %s\r\nx-tokenization-time: %d\r\nx-inference-time: %d\r\n"
_OWN = (
    b"x-compute-time: %d\r\nx-total-time: %d\r\nx-compute-characters: %d\r\n"
    b"x-compute-tokens: %d\r\nx-queue-time: %d\r\n"
)
# Numbers as header bytes, looked up rather than formatted on the hot path (formatting five
# numbers cost more instructions than the rest of the headers together).
_SMALL = 4096
_DIGITS = tuple(b"%d" % n for n in range(_SMALL))


class CallTimes:
    """What one upstream call's answer headers say about its work (shared by its inputs), and
    the header lines its inputs share, written once."""

    __slots__ = ("compute_type", "inference", "queue", "shared", "tokenization")

    def __init__(self, compute_type: bytes, tokenization: int, queue: int, inference: int) -> None:
        self.compute_type = compute_type
        self.tokenization = tokenization
        self.queue = queue
        self.inference = inference
        self.shared = _SHARED % (compute_type, tokenization, inference)

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> CallTimes | None:
        """From an answer's headers (names in lower case); None when TEI sent none."""
        kind = headers.get("x-compute-type")
        if kind is None or not _TYPE.fullmatch(kind):
            return None
        return cls(
            kind.encode(),
            _millis(headers.get("x-tokenization-time")),
            _millis(headers.get("x-queue-time")),
            _millis(headers.get("x-inference-time")),
        )


def _millis(value: str | None) -> int:
    return int(value) if value is not None and value.isdigit() and len(value) < 16 else 0


def characters(items: Sequence[Any]) -> int:
    """TEI's `count_chars` over a request's inputs: a text's characters, a token-id list's
    length, a pair's two texts together (router/src/http/types.rs)."""
    total = 0
    for item in items:
        if isinstance(item, str):
            total += len(item)
        else:  # token ids, or a /predict sequence: [text] or [text, text]
            total += sum(len(x) if isinstance(x, str) else 1 for x in item)
    return total


class Answered(Protocol):
    """One input's answer, as far as its headers go."""

    tokens: int
    times: CallTimes | None


def for_caller(
    items: Sequence[Any], answers: Sequence[Answered], waited_s: float, arrived: float
) -> bytes:
    """The header lines of a caller's answer: its inputs, their answers, the longest any waited
    in the proxy's queue, and when it arrived (`time.perf_counter()`); b"" when TEI sent none."""
    total = int((time.perf_counter() - arrived) * 1000)
    if len(answers) == 1:  # the hot path: one input
        answer = answers[0]
        times = answer.times
        if times is None:
            return b""
        item = items[0]
        chars = len(item) if item.__class__ is str else characters(items)
        tokens = answer.tokens
        queue = times.queue + int(waited_s * 1000)
        if total < _SMALL and chars < _SMALL and tokens < _SMALL and queue < _SMALL:
            d = _DIGITS
            t = d[total]
            return b"".join(
                (
                    times.shared,
                    b"x-compute-time: ",
                    t,
                    b"\r\nx-total-time: ",
                    t,
                    b"\r\nx-compute-characters: ",
                    d[chars],
                    b"\r\nx-compute-tokens: ",
                    d[tokens],
                    b"\r\nx-queue-time: ",
                    d[queue],
                    b"\r\n",
                )
            )
        return times.shared + _OWN % (total, total, chars, tokens, queue)
    known = [a.times for a in answers if a.times is not None]
    if not known:
        return b""
    n = len(known)
    shared = _SHARED % (
        known[0].compute_type,
        sum(t.tokenization for t in known) // n,
        sum(t.inference for t in known) // n,
    )
    queue = sum(t.queue for t in known) // n + int(waited_s * 1000)
    tokens = sum(a.tokens for a in answers)
    return shared + _OWN % (total, total, characters(items), tokens, queue)
