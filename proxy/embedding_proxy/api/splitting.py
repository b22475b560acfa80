"""Cut an upstream batch answer into one JSON fragment per input, without parsing floats
where it can be avoided: the proxy passes vectors through, so it never needs their values; and
share the batch's token count among its inputs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from .errors import UPSTREAM, ProxyError


def split(body: bytes, count: int) -> list[bytes | memoryview]:
    """The top-level JSON array `body` as `count` raw element fragments, or 502."""
    parts: list[bytes | memoryview] | None = _split_numbers(body)
    if parts is None:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ProxyError(
                502,
                f"upstream answered 200 with a body that is not JSON: {_snippet(body)}",
                UPSTREAM,
            ) from None
        if not isinstance(data, list):
            raise ProxyError(502, "upstream answered 200 with JSON that is not a list", UPSTREAM)
        parts = [orjson.dumps(element) for element in data]
    if len(parts) != count:
        raise ProxyError(
            502, f"upstream answered {len(parts)} results for {count} inputs", UPSTREAM
        )
    return parts


def _split_numbers(body: bytes) -> list[bytes | memoryview] | None:
    """Fast path for lists of numbers, as TEI sends vectors: `[[1.0,2.0],[3.0]]` (/embed), or
    nested deeper, a vector per token (/embed_all). Cut without parsing a number, which in
    Python would cost several times the text's size. A flat vector is a view into `body`:
    nothing is copied until the caller's answer is joined (a result kept while its request
    waits for the rest is copied then: app.py). Anything else (objects, strings, spaces between
    lists) returns None."""
    if not (body.startswith(b"[[") and body.endswith(b"]]")) or b"{" in body:
        return None
    view = memoryview(body)
    parts: list[bytes | memoryview] = []
    start, end = 1, len(body) - 1
    # Single-byte searches (memchr) only: this runs over every vector the proxy passes through.
    while True:
        cut = body.find(b"]", start, end)
        if cut < 0:
            return None  # cut short
        if body.find(b"[", start + 1, cut) >= 0:
            return None if b'"' in body else _split_nested(body)
        parts.append(view[start : cut + 1])
        if cut + 1 == end:
            return parts
        if body[cut + 1 : cut + 3] != b",[":
            return None
        start = cut + 2


_BRACKETS = re.compile(rb"[\[\]]")
_OPEN = ord("[")


def _split_nested(body: bytes) -> list[bytes | memoryview] | None:
    """Lists of lists of numbers (no objects, no strings): cut where the top level's elements
    end, counting brackets only (a few per token, never one per number). Each is a copy: an
    input's vectors never keep the whole batch's answer alive."""
    parts: list[bytes | memoryview] = []
    depth, start, end = 0, 1, len(body) - 1
    for found in _BRACKETS.finditer(body, 1, end):
        at = found.start()
        if body[at] == _OPEN:
            depth += 1
            continue
        depth -= 1
        if depth:
            if depth < 0:
                return None
            continue
        parts.append(body[start : at + 1])
        if at + 1 == end:
            return parts
        if body[at + 1 : at + 3] != b",[":
            return None
        start = at + 2
    return None


def _snippet(body: bytes) -> str:
    return body[:120].decode("utf-8", "replace").strip()


def share(tokens: int, items: Sequence[Any]) -> list[int]:
    """Apportion a batch's token count to its inputs by their length (token ids count exactly),
    so that the shares add up to the total."""
    weights = [len(item) if isinstance(item, str | list) else 1 for item in items]
    total_weight = sum(weights) or 1
    raw = [tokens * w / total_weight for w in weights]
    out = [int(r) for r in raw]
    # Largest remainders get the leftover tokens.
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)[
        : tokens - sum(out)
    ]:
        out[i] += 1
    return out
