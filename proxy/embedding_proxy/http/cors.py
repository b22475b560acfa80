"""CORS as TEI answers it: tower-http's `CorsLayer` around every route of TEI's router, allowing
GET and POST with a `Content-Type` header, from any origin unless `--cors-allow-origin` lists
some (router/src/http/server.rs, `run`). Every answer says `Vary: origin,
access-control-request-method, access-control-request-headers`; with any origin allowed, every
answer carries `Access-Control-Allow-Origin: *`, and with a list, an answer to a request whose
`Origin` is on it carries that origin; every `OPTIONS` request (a preflight) is answered at once,
200 and empty, with the allowed methods and headers."""

from __future__ import annotations

from collections.abc import Sequence

from .message import Request, Response

VARY = b"vary: origin, access-control-request-method, access-control-request-headers\r\n"
ANY = b"access-control-allow-origin: *\r\n"
PREFLIGHT = (
    b"access-control-allow-methods: GET,POST\r\naccess-control-allow-headers: content-type\r\n"
)


class Cors:
    def __init__(self, origins: Sequence[str] | None) -> None:
        """`origins`: those allowed; None, or a list holding `*`: any."""
        self.listed: frozenset[str] | None = (
            None if origins is None or "*" in origins else frozenset(origins)
        )
        # What every answer carries, written once by the server (http.answer.Clock).
        self.always = VARY + (ANY if self.listed is None else b"")

    def origin_line(self, request: Request) -> bytes:
        """With a list: the line for a request whose `Origin` is on it (else b"")."""
        origin = request.headers.get("origin")
        if self.listed is None or origin is None or origin not in self.listed:
            return b""
        return b"access-control-allow-origin: " + origin.encode("latin-1") + b"\r\n"

    def preflight(self, request: Request) -> Response:
        """The answer to any `OPTIONS` request (with a list, `origin_line` is added to it as to
        every answer)."""
        return Response(200, lines=PREFLIGHT)
