"""Writing answers: the status line and headers of a Response, framed by the server alone."""

from __future__ import annotations

import functools
import re
import time
from email.utils import formatdate
from http import HTTPStatus

from .message import Response

_STATUS_LINES = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus if s >= 200
}
NO_BODY = frozenset({204, 304})  # and 1xx: answers that carry neither a body nor its length
# Framing is ours to write; a handler's (or an upstream's) copy of these would contradict it.
_OWN_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "date", "keep-alive"}
)
_OWN_WITH_TYPE = _OWN_HEADERS | {"content-type"}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # in a header value: all but HTAB
ALLOW = {"Allow": "GET, HEAD, POST, OPTIONS"}


class Clock:
    """The Date header, formatted once a second rather than once a response, and after it the
    header lines every answer of the server carries (`always`: CORS's, written once)."""

    def __init__(self, always: bytes = b"") -> None:
        self._second = 0
        self._line = b""
        self._always = always

    def date_line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            date = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
            self._line = date + self._always
        return self._line


def answer_head(
    response: Response, keep_alive: bool, date: bytes, head_only: bool = False
) -> bytes:
    """The status line and headers. Raises ValueError (or UnicodeEncodeError) for an answer
    that cannot be written: a bad status, a header name that is not a token, a control
    character or a character beyond Latin-1 in a value."""
    status = response.status
    line = _STATUS_LINES.get(status)
    if line is None:
        if status.__class__ is not int or not 200 <= status <= 599:
            raise ValueError(f"cannot answer with status {status!r}")
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    lines = [line, date]
    no_body = status in NO_BODY
    skip = _OWN_HEADERS
    if response.content_type is not None and not no_body:
        lines.append(_type_line(response.content_type))
        skip = _OWN_WITH_TYPE
    headers = response.headers
    if headers:
        for name, value in headers if headers.__class__ is list else headers.items():
            if name.lower() not in skip:
                if _TOKEN.fullmatch(name) is None:
                    raise ValueError(f"header name {name!r} is not a token")
                lines.append(name.encode() + b": " + _value(value) + b"\r\n")
    if response.lines:
        lines.append(response.lines)
    if not no_body:
        lines.append(b"Content-Length: %d\r\n" % len(response.body))
    if not keep_alive:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


@functools.lru_cache(maxsize=64)  # a handful of types, checked once each
def _type_line(content_type: str) -> bytes:
    return b"Content-Type: " + _value(content_type) + b"\r\n"


def _value(value: str) -> bytes:
    if _CONTROL.search(value) is not None:
        raise ValueError(f"header value {value!r} holds a control character")
    return value.encode("latin-1")


def plain(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, message.encode() + b"\n", "text/plain; charset=utf-8", headers)


INTERNAL_ERROR = b'{"error":"internal error in the proxy","error_type":"Backend"}'
