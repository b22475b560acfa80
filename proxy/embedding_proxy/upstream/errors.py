"""How a call to the upstream fails: one error type, whichever client made the call."""

from __future__ import annotations

import aiohttp

from ..api.errors import UPSTREAM, ProxyError
from ..config.redaction import redact


class UpstreamError(ProxyError):
    """What every call to the upstream raises when it fails, whichever client made it; `cause`
    says why in a few words (for logs and readiness)."""

    def __init__(self, status: int, message: str, error_type: str, cause: str) -> None:
        super().__init__(status, message, error_type)
        self.cause = cause


def too_big(limit: int) -> UpstreamError:
    message = f"upstream answer exceeds upstream.max_answer_bytes ({limit} bytes)"
    return UpstreamError(502, message, UPSTREAM, message)


def describe(error: aiohttp.ClientError) -> str:
    """An aiohttp error in a few words, with no secret of the upstream's URL."""
    return redact(str(error)) or type(error).__name__
