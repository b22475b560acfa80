"""Cut an upstream batch answer into one JSON fragment per input, without parsing floats
where it can be avoided: the proxy passes vectors through, so it never needs their values; and
share the batch's token count among its inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from .errors import UPSTREAM, ProxyError


def split(body: bytes, count: int) -> list[bytes | memoryview]:
    """The top-level JSON array `body` as `count` raw element fragments, or 502."""
    parts = _split_vectors(body)
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


def _split_vectors(body: bytes) -> list[bytes | memoryview] | None:
    """Fast path for a list of flat number lists, as TEI's /embed sends it: `[[1.0,2.0],[3.0]]`.
    The fragments are views into `body`: nothing is copied until the caller's answer is joined.
    Anything else (deeper nesting, objects, spaces between lists) returns None."""
    if not (body.startswith(b"[[") and body.endswith(b"]]")) or b"{" in body:
        return None
    view = memoryview(body)
    parts: list[bytes | memoryview] = []
    start, end = 1, len(body) - 1
    # Single-byte searches (memchr) only: this runs over every vector the proxy passes through.
    while True:
        cut = body.find(b"]", start, end)
        if cut < 0 or body.find(b"[", start + 1, cut) >= 0:
            return None  # cut short, or nested lists: not flat vectors
        parts.append(view[start : cut + 1])
        if cut + 1 == end:
            return parts
        if body[cut + 1 : cut + 3] != b",[":
            return None
        start = cut + 2


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
