"""Errors a caller can receive, in TEI's shapes.

TEI answers `{"error": "...", "error_type": "..."}` on its own routes and
`{"message": "...", "code": <status>, "type": "..."}` on `/v1/embeddings`; the proxy does the same,
whether the error is the upstream's own (passed through) or the proxy's.
"""

from __future__ import annotations

import orjson

# TEI's error types, capitalised as TEI sends them, and the proxy's own additions.
VALIDATION = "Validation"
EMPTY = "Empty"
OVERLOADED = "Overloaded"
UNHEALTHY = "Unhealthy"
TOKENIZER = "Tokenizer"
BACKEND = "Backend"
UPSTREAM = "Upstream"  # the upstream could not be reached or answered nonsense (502)
TIMEOUT = "Timeout"  # the request's deadline passed (504)
UNAUTHORIZED = "Unauthorized"


class ProxyError(Exception):
    """An answer other than success for one caller (or one input)."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.headers = headers or {}
        self.reason = reason  # set when the proxy itself refuses: the rejections metric's label

    def tei_body(self) -> bytes:
        return orjson.dumps({"error": self.message, "error_type": self.error_type})

    def openai_body(self) -> bytes:
        return orjson.dumps({"message": self.message, "code": self.status, "type": self.error_type})

    def __repr__(self) -> str:
        return f"ProxyError({self.status}, {self.message!r}, {self.error_type!r})"


# The most of an upstream's plain-text error passed on to a caller.
MAX_PASSED = 4096


def from_upstream(status: int, body: bytes) -> ProxyError:
    """The upstream's own error, kept as it is when it is in TEI's shape."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        message = data.get("error", data.get("message"))
        error_type = data.get("error_type", data.get("type"))
        if isinstance(message, str) and isinstance(error_type, str):
            return ProxyError(status, message, error_type)
    if 400 <= status < 500:
        # TEI's own rejections of a body it cannot read are plain text (axum's extractors:
        # "Failed to deserialize the JSON body into the target type: ..."): passed on as said.
        text = body[:MAX_PASSED].decode("utf-8", "replace").strip()
        return ProxyError(status, text or f"upstream answered {status}", VALIDATION)
    snippet = body[:200].decode("utf-8", "replace").strip()
    return ProxyError(
        502, f"upstream answered {status} with a body that is not TEI's: {snippet}", UPSTREAM
    )


def overloaded(message: str, retry_after_s: int = 1, reason: str = "queue_full") -> ProxyError:
    return ProxyError(429, message, OVERLOADED, {"Retry-After": str(retry_after_s)}, reason)


def too_large(limit: int) -> ProxyError:
    """A request body over `server.max_body_bytes`."""
    return ProxyError(
        413, f"request body exceeds the limit of {limit} bytes", VALIDATION, reason="too_large"
    )
