"""Cut an upstream batch answer into one JSON fragment per input, without parsing floats
where it can be avoided: the proxy passes vectors through, so it never needs their values."""

from __future__ import annotations

import orjson

from .errors import UPSTREAM, ProxyError


def split(body: bytes, count: int) -> list[bytes]:
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


def _split_vectors(body: bytes) -> list[bytes] | None:
    """Fast path for a compact list of flat number lists, as TEI's /embed sends it:
    `[[1.0,2.0],[3.0]]`. Anything else (nesting, objects, spaces) returns None."""
    if not (body.startswith(b"[[") and body.endswith(b"]]")):
        return None
    inner = body[2:-2]
    parts = inner.split(b"],[")
    separators = len(parts) - 1
    if inner.count(b"[") != separators or inner.count(b"]") != separators:
        return None  # nested lists: not flat vectors
    if b"{" in inner or b'"' in inner or b" " in inner:
        return None
    return [b"[" + part + b"]" for part in parts]


def _snippet(body: bytes) -> str:
    return body[:120].decode("utf-8", "replace").strip()
