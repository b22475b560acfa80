"""What the load generator sends: distinct inputs of an exact token count, grouped into requests."""

from __future__ import annotations

import orjson


def make_text(salt: str, index: int, tokens: int) -> str:
    """A distinct input of exactly `tokens` simulator tokens (words + [CLS] + [SEP])."""
    return " ".join([f"{salt}{index}", *(["word"] * (tokens - 3))])


def request_sizes(inputs: int, per_request: int) -> list[int]:
    """Inputs per request: full requests of `per_request`, the last one holding what is left."""
    full, rest = divmod(inputs, per_request)
    return [per_request] * full + ([rest] if rest else [])


def make_bodies(salt: str, sizes: list[int], tokens: int, as_list: bool) -> list[bytes]:
    """Request bodies; a single input is sent as a string unless `as_list` (TEI accepts both)."""
    bodies: list[bytes] = []
    index = 0
    for size in sizes:
        texts = [make_text(salt, index + i, tokens) for i in range(size)]
        index += size
        inputs: str | list[str] = texts[0] if size == 1 and not as_list else texts
        bodies.append(orjson.dumps({"inputs": inputs}))
    return bodies
