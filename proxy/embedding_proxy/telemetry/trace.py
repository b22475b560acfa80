"""The W3C trace context of a batched request: one upstream call carries the inputs of many
callers, so it carries the trace context of one of them, the first of its inputs' callers that
sent one (`traceparent`, with its `tracestate`), and TEI's spans join that caller's trace.
Forwarded requests pass their own on unchanged."""

from __future__ import annotations

import re
from collections.abc import Mapping

_PARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
MAX_STATE = 512  # W3C: at most 32 members, kept to 512 characters by vendors


def context(headers: Mapping[str, str]) -> dict[str, str] | None:
    """A request's trace headers as they may be sent upstream: a well-formed `traceparent`, and
    its `tracestate` when that is printable ASCII of reasonable length; else None."""
    parent = headers.get("traceparent")
    if parent is None or not _PARENT.fullmatch(parent):
        return None
    state = headers.get("tracestate")
    if state and len(state) <= MAX_STATE and state.isascii() and state.isprintable():
        return {"traceparent": parent, "tracestate": state}
    return {"traceparent": parent}
