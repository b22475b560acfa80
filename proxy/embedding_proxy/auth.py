"""Client API keys: from the config (environment) and from a file (a mounted Kubernetes Secret,
one key a line) that is read again whenever it changes. Checked in constant time."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from .config import AuthConfig
from .errors import UNAUTHORIZED, ProxyError
from .reload import Fingerprint, fingerprint

log = logging.getLogger(__name__)


def read_keys(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class KeyStore:
    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self._file_keys: list[bytes] = []
        self._seen: Fingerprint = None
        self.refresh()

    @property
    def enabled(self) -> bool:
        return bool(self.config.api_keys or self.config.api_keys_file)

    def update(self, config: AuthConfig) -> None:
        self.config = config
        self._seen = None
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
            self._file_keys = [k.encode() for k in read_keys(path)]
        except OSError as e:
            # Keep no keys rather than stale ones: a missing Secret must not leave old keys valid.
            log.error("cannot read api_keys_file %s: %s; refusing all keys", path, e.strerror)
            self._file_keys = []
        else:
            log.info("api keys loaded from %s (%d keys)", path, len(self._file_keys))

    def check(self, authorization: str | None) -> str:
        """The key a request presents, if valid; else 401."""
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise unauthorized("missing API key: send `Authorization: Bearer <key>`")
        token = presented.strip().encode()
        valid = False
        # Compare with every key so the time taken says nothing about which one matched.
        for key in (*(k.encode() for k in self.config.api_keys), *self._file_keys):
            valid |= hmac.compare_digest(token, key)
        if not valid:
            raise unauthorized("invalid API key")
        return presented.strip()


def unauthorized(message: str) -> ProxyError:
    return ProxyError(401, message, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"}, "unauthorized")
