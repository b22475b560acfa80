"""The checks on a complete request head: h11's framing rules, and a target that can only be a
path on the upstream (docs/security.md). What fails them is refused with its status and the
connection closes."""

from __future__ import annotations

from typing import Protocol

# Header names as sent, each with its lower-case str: the same few names come on every request.
# Bounded, in count and length: a peer that sends new names every time only fills it.
_NAMES: dict[bytes, str] = {}
_NAMES_KEPT = 512
_NAME_KEPT_BYTES = 64


class BadHead(Exception):
    """A head the server refuses: answered with `status`, then the connection closes."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class _Parser(Protocol):  # httptools' request parser, as far as the checks read it
    def get_http_version(self) -> str: ...
    def get_method(self) -> bytes: ...
    def should_upgrade(self) -> bool: ...


def read_head(
    parser: _Parser, header_list: list[tuple[bytes, bytes]], url_parts: list[bytes]
) -> tuple[dict[str, str], str, bytes, str | None]:
    """The headers (names in lower case, repeats joined with ", "), the HTTP version, the
    request target and the transfer coding of a head; raises BadHead for one to refuse."""
    headers: dict[str, str] = {}
    names = _NAMES
    for raw_name, raw_value in header_list:
        name = names.get(raw_name)
        if name is None:
            name = raw_name.decode("latin-1").lower()
            if len(names) < _NAMES_KEPT and len(raw_name) <= _NAME_KEPT_BYTES:
                names[raw_name] = name
        # httptools keeps a value's trailing whitespace; h11 (and the RFC) drop it.
        value = raw_value.decode("latin-1").rstrip(" \t")
        if name in headers:
            if name == "host":
                raise BadHead("more than one Host header")
            headers[name] = f"{headers[name]}, {value}"
        else:
            headers[name] = value
    version = parser.get_http_version()
    if version != "1.1":
        if version != "1.0":
            raise BadHead(f"HTTP/{version} is not supported", 505)
    elif "host" not in headers:
        raise BadHead("HTTP/1.1 request without a Host header")
    coding = headers.get("transfer-encoding")
    if coding is not None and coding.lower() != "chunked":
        raise BadHead("only Transfer-Encoding: chunked is supported")
    url = url_parts[0] if len(url_parts) == 1 else b"".join(url_parts)
    if url[:1] != b"/" and (url != b"*" or parser.get_method() != b"OPTIONS"):
        # Absolute-form, authority-form, or anything else: the proxy only ever talks to
        # its own upstream, and a target that is not a path could name another host.
        raise BadHead("the request target must be a path starting with /")
    if b"#" in url:
        raise BadHead("a request target has no fragment")
    if unsafe_path(url):
        raise BadHead("the request path has a dot segment or starts with //")
    if parser.should_upgrade() and (
        coding is not None
        or headers.get("content-length", "0") != "0"
        or parser.get_method() == b"CONNECT"
    ):
        raise BadHead("protocol upgrades are not supported")
    return headers, version, url, coding


def unsafe_path(url: bytes) -> bool:
    """A `.` or `..` segment (raw or percent-encoded), or `//` at the start: the upstream (or
    anything between) may resolve it to a path outside the one asked for."""
    path = url.partition(b"?")[0]
    if path[:2] == b"//":
        return True
    if b"." not in path and b"%" not in path:
        return False
    for segment in path.lower().replace(b"%2e", b".").split(b"/"):
        if segment in (b".", b".."):
            return True
    return False
