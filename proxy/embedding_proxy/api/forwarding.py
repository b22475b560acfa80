"""What a request forwarded to TEI, and its answer, may carry: which headers stay behind (those
of one connection, those the proxy writes itself), and the one shape of request-target passed on.
Pure: no I/O."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping

from yarl import URL

from .errors import VALIDATION, ProxyError

# Headers that belong to one connection (RFC 9110 7.6.1), never passed on in either direction;
# nor is any header that a `Connection` header names.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# A caller's headers that the proxy replaces on a forwarded request: the client for TEI writes
# Host and Content-Length, the body is already read (Expect), and the caller's key stays here.
REPLACED_IN_REQUESTS = frozenset({"host", "content-length", "expect", "authorization"})
# An upstream answer's headers that the proxy replaces: it writes its own framing, the body it
# passes on is decompressed, and its own CORS headers (http/cors.py, TEI's policy as the proxy is
# configured) take the place of TEI's, which would repeat or contradict them.
REPLACED_IN_ANSWERS = frozenset(
    {
        "content-length",
        "content-encoding",
        "vary",
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-allow-credentials",
        "access-control-expose-headers",
        "access-control-max-age",
        "access-control-allow-private-network",
    }
)
# A forwarded request-target: origin-form only (a path and a query of RFC 3986 characters).
_PATH = re.compile(r"/[A-Za-z0-9\-._~%!$&'()*+,;=:@/]*")
_QUERY = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=:@/?]*")
# A header as it may be passed on: a token for a name, no control character in the value.
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def named_by_connection(values: Iterable[str | None]) -> frozenset[str]:
    """The header names (lower case) that `Connection` header values list as hop-by-hop."""
    return frozenset(
        token.strip().lower() for value in values if value for token in value.split(",")
    )


def request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A caller's headers as they may be passed on: without hop-by-hop headers, those the proxy
    replaces, or a value with bytes beyond ASCII (obs-text), which the client for TEI would write
    back as UTF-8, not as the bytes the caller sent."""
    drop = HOP_BY_HOP | REPLACED_IN_REQUESTS | named_by_connection([headers.get("connection")])
    return {k: v for k, v in headers.items() if k.lower() not in drop and v.isascii()}


def url_credentials(url: URL) -> str | None:
    """The `Authorization` value for the `user:password` of the upstream URL (Basic), if any."""
    if url.user is None and url.password is None:
        return None
    return "Basic " + base64.b64encode(f"{url.user or ''}:{url.password or ''}".encode()).decode()


def answer_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """An upstream answer's headers as they may be passed on, in order and repeats kept
    (`Set-Cookie`): the bytes as received, but without hop-by-hop headers, the framing the proxy
    writes itself, or any header that could not be written back as it came (a name that is not
    a token, a control character in the value)."""
    pairs = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw]
    connection = named_by_connection(v for n, v in pairs if n.lower() == "connection")
    drop = HOP_BY_HOP | REPLACED_IN_ANSWERS | connection
    return [
        (n, v)
        for n, v in pairs
        if n.lower() not in drop and _NAME.fullmatch(n) and not _BAD_VALUE.search(v)
    ]


def target_url(origin: URL, path: str, query: str) -> URL:
    """The URL a forwarded request goes to: the upstream's origin and path prefix plus the
    request's path and query, never anything parsed from the request-target as a whole."""
    if not _PATH.fullmatch(path) or not _QUERY.fullmatch(query):
        raise ProxyError(
            400,
            "request-target must be a path with an optional query (origin-form)",
            VALIDATION,
        )
    url = URL.build(
        scheme=origin.scheme,
        authority=origin.raw_authority,
        path=origin.raw_path.rstrip("/") + path,
        query_string=query,
        encoded=True,
    )
    if (url.scheme, url.raw_authority) != (origin.scheme, origin.raw_authority):
        raise ProxyError(400, "request-target would leave the upstream", VALIDATION)
    return url
