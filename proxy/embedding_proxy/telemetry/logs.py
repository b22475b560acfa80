"""Logging: the text or JSON format, the access log, request ids, and the upstream's state.

The access log costs nothing when it is off: the API handler is wrapped only when it is on, and
the hot path then looks up one context variable per request (`current()`), which is None
otherwise.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

ACCESS = logging.getLogger("embedding_proxy.access")
REQUEST_ID = "x-request-id"
# An id a caller sends is echoed and logged only if it is short and plain (no header or log
# injection); otherwise the proxy makes its own.
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: str, fmt: str = "text") -> None:
    # With the access log on, every request makes a record: leave out what neither format shows
    # and logging would otherwise gather for each one (the caller's file and line, found by
    # walking the stack; thread and process names). logging's documented switches for this.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, msg, and the record's `fields` if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def request_id(given: str | None) -> str:
    """The caller's X-Request-Id when it is plain, else a new one."""
    if given is not None and _PLAIN_ID.fullmatch(given):
        return given
    return secrets.token_hex(8)


class Access:
    """What one request's access-log line says beyond its method, route and status."""

    __slots__ = ("inputs", "queue_s", "upstream_s")

    def __init__(self) -> None:
        self.inputs = 0
        self.queue_s: float | None = None
        self.upstream_s: float | None = None


_access: contextvars.ContextVar[Access | None] = contextvars.ContextVar("access", default=None)
current = _access.get


def start_access() -> Access:
    access = Access()
    _access.set(access)
    return access


def log_access(
    method: str, path: str, status: int, rid: str, access: Access, started: float
) -> None:
    total_ms = (time.perf_counter() - started) * 1000
    fields: dict[str, Any] = {
        "method": method,
        "route": path,
        "status": status,
        "inputs": access.inputs,
        "queue_ms": _ms(access.queue_s),
        "upstream_ms": _ms(access.upstream_s),
        "total_ms": round(total_ms, 2),
        "request_id": rid,
    }
    ACCESS.info(
        "%s %s %d inputs=%d queue_ms=%s upstream_ms=%s total_ms=%.2f request_id=%s",
        method,
        path,
        status,
        access.inputs,
        fields["queue_ms"],
        fields["upstream_ms"],
        total_ms,
        rid,
        extra={"fields": fields},
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def describe(error: object) -> str:
    """A short reason for a failed upstream call, without the exception's repr."""
    if isinstance(error, aiohttp.ClientConnectorError):
        # asyncio's text repeats the address; the system's own for the code says it plainly.
        code = error.os_error.errno
        text = os.strerror(code) if code else str(error.os_error)
        return text[:1].lower() + text[1:]
    if isinstance(error, TimeoutError):
        return "no answer in time"
    text = str(error)
    text = text or type(error).__name__
    return text[:1].lower() + text[1:]


class UpstreamState:
    """Logs the upstream's state when it changes, once: reachable (with model and limits) or
    unreachable (with the reason)."""

    def __init__(self, base: str, log: logging.Logger) -> None:
        self.base = base
        self.log = log
        self.reachable: bool | None = None
        self.seen: Any = None

    def up(self, info: Any) -> None:
        if self.reachable is True and info == self.seen:
            return
        self.reachable, self.seen = True, info
        self.log.info(
            "upstream %s reachable: model %s, max_client_batch_size %d, max_batch_tokens %d, "
            "max_concurrent_requests %d, max_input_length %d",
            self.base,
            info.model_id,
            info.max_client_batch_size,
            info.max_batch_tokens,
            info.max_concurrent_requests,
            info.max_input_length,
            extra={"fields": {"upstream": self.base, "reachable": True, "model": info.model_id}},
        )

    def down(self, reason: str) -> None:
        if self.reachable is False:
            return
        self.reachable = False
        log = self.log.warning if self.seen is not None else self.log.info
        log(
            "upstream %s unreachable: %s",
            self.base,
            reason,
            extra={"fields": {"upstream": self.base, "reachable": False, "reason": reason}},
        )
