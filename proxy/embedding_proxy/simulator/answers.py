"""How TEI answers a successful inference request: a JSON body and its timing and size headers
(`ResponseMetadata` in router/src/lib.rs)."""

from __future__ import annotations

import time

from aiohttp import web

from .pipeline import Done

Answer = tuple[bytes, dict[str, str]]  # a body and TEI's headers


def json_response(body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, content_type="application/json", headers=headers)


def respond(answer: Answer) -> web.Response:
    return json_response(*answer)


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))  # `Duration::as_millis`: whole milliseconds, rounded down


def tei_headers(started: float, done: list[Done]) -> dict[str, str]:
    """TEI's headers: characters (a text's, or one per token id) and tokens summed over the
    inputs; tokenization, queue and inference times averaged over them; total time since the
    request began."""
    n = max(len(done), 1)
    total = _ms(time.monotonic() - started)
    return {
        "x-compute-type": "gpu+optimized",
        "x-compute-time": total,
        "x-compute-characters": str(sum(d.encoded.chars for d in done)),
        "x-compute-tokens": str(sum(d.encoded.tokens for d in done)),
        "x-total-time": total,
        "x-tokenization-time": _ms(sum(d.tokenization for d in done) / n),
        "x-queue-time": _ms(sum(d.forward.queue_seconds for d in done) / n),
        "x-inference-time": _ms(sum(d.forward.inference_seconds for d in done) / n),
    }
