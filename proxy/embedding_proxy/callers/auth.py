"""Client API keys: from the config (environment) and from a file (a mounted Kubernetes Secret,
one key a line) that is read again whenever it changes. Checked in constant time. A key may
carry a lane and a weight: `KEY lane=batch weight=2`."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from ..api.errors import UNAUTHORIZED, ProxyError
from ..config.lanes import key_line
from ..config.reload import Fingerprint, fingerprint
from ..config.settings import AuthConfig
from .priority import Key

log = logging.getLogger(__name__)


def read_keys(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def parse_keys(lines: list[str], where: str) -> list[tuple[bytes, Key]]:
    """Each line's key and options; a line with bad options is left out (its key refused). A key
    listed again keeps its first line: an appended line must not lift a key into a higher lane."""
    out = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        try:
            key, lane, weight = key_line(line)
        except ValueError as e:
            log.error("%s, key %d: %s; that key is refused", where, number, e)
            continue
        if key in seen:
            log.error("%s, key %d: listed before; its first line holds", where, number)
            continue
        seen.add(key)
        out.append((key.encode(), Key(key, lane, weight)))
    return out


class KeyStore:
    def __init__(self, config: AuthConfig) -> None:
        self._file_keys: list[tuple[bytes, Key]] = []
        self.update(config)

    def update(self, config: AuthConfig) -> None:
        self.config = config
        self.enabled = bool(config.api_keys or config.api_keys_file)  # read on every request
        self._config_keys = parse_keys(config.api_keys, "auth.api_keys")
        self._seen: Fingerprint = None
        self.refresh()

    def refresh(self) -> None:
        """Read the key file again if it changed (cheap when it did not: one stat)."""
        path = self.config.api_keys_file
        if path is None:
            self._file_keys = []
            return
        seen = fingerprint(path)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            self._file_keys = parse_keys(read_keys(path), str(path))
        except OSError as e:
            # Keep no keys rather than stale ones: a missing Secret must not leave old keys valid.
            log.error("cannot read api_keys_file %s: %s; refusing all keys", path, e.strerror)
            self._file_keys = []
        else:
            log.info("api keys loaded from %s (%d keys)", path, len(self._file_keys))

    def check(self, authorization: str | None) -> Key:
        """The key a request presents, if valid; else 401."""
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise unauthorized("missing API key: send `Authorization: Bearer <key>`")
        token = presented.strip().encode()
        found: Key | None = None
        # Compare with every key so the time taken says nothing about which one matched.
        for key, grant in (*self._config_keys, *self._file_keys):
            if hmac.compare_digest(token, key) and found is None:
                found = grant  # auth.api_keys first, then the file: the first line of a key holds
        if found is None:
            raise unauthorized("invalid API key")
        return found


def check_lent(presented: str | None, expected: str | None) -> None:
    """With the upstream's credentials and no keys of its own, the proxy lends them only to a
    caller who holds them: its `Authorization` must be exactly what the proxy sends TEI. TEI
    compares the whole header with `Bearer <key>`, scheme and case included
    (router/src/http/server.rs, the `auth` middleware); here in constant time. No credentials
    to compare with (the key file unreadable): every caller is refused."""
    if presented is None:
        raise unauthorized("missing API key: send `Authorization: Bearer <key>`")
    if expected is None:
        raise unauthorized("the upstream's key is not available; no caller is let through")
    if not hmac.compare_digest(presented.encode("latin-1"), expected.encode()):
        raise unauthorized("invalid API key")


def unauthorized(message: str) -> ProxyError:
    return ProxyError(401, message, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"}, "unauthorized")
