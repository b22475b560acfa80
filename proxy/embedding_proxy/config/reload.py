"""Live reload of the config file: as a Kubernetes ConfigMap volume replaces it (a new directory
and an atomic symlink swap), or on SIGHUP.

A reload never lowers security by accident (docs/security.md, "Reloading the config"): a file
that holds no settings is refused, and so is one that turns client keys or the rate limit off
without saying so; a file rewritten in place is read only once it has stood still for one look."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .settings import Config, ConfigError, read_file

log = logging.getLogger(__name__)

Fingerprint = tuple[str, int, int, int] | None


def fingerprint(path: Path) -> Fingerprint:
    """Changes whenever what `path` resolves to changes, symlink swaps included."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_ino, st.st_mtime_ns, st.st_size)


def _says(document: Mapping[str, Any], section: str, *names: str) -> bool:
    part = document.get(section)
    return isinstance(part, Mapping) and any(name in part for name in names)


def lowered(running: Config, new: Config, document: Mapping[str, Any]) -> str | None:
    """Why `new` may not replace `running`: it turns a protection off that the file (`document`)
    does not turn off by name. A file cut short, or rewritten without a section, must not open
    the proxy: turning keys off takes `auth.api_keys: []`, the rate limit `rate_per_second: 0`."""
    old, auth = running.auth, new.auth
    keys_off = (old.api_keys or old.api_keys_file) and not (auth.api_keys or auth.api_keys_file)
    if keys_off and not _says(document, "auth", "api_keys", "api_keys_file"):
        return "it turns client keys off without saying so (to do so: `auth.api_keys: []`)"
    rate_off = running.limits.rate_per_second and not new.limits.rate_per_second
    if rate_off and not _says(document, "limits", "rate_per_second"):
        return "it turns the rate limit off without saying so (to do so: `rate_per_second: 0`)"
    return None


class ConfigWatcher:
    def __init__(
        self,
        path: Path,
        load: Callable[[], Config],
        apply: Callable[[Config], None],
        on_result: Callable[[bool], None],
        running: Callable[[], Config],
        interval: float = 1.0,
    ) -> None:
        self.path = path
        self._load = load
        self._apply = apply
        self._on_result = on_result
        self._running = running
        self.interval = interval
        self._seen = fingerprint(path)

    def reload(self) -> bool:
        """Read the file again; keep the running config if the new one is invalid, empty, or
        turns a protection off without saying so."""
        self._seen = fingerprint(self.path)
        try:
            document = read_file(self.path)
            if not document:
                raise ConfigError(
                    f"config file {self.path} holds no settings (empty, null, `---`, `{{}}` or "
                    "comments only)"
                )
            config = self._load()
            why = lowered(self._running(), config, document)
            if why is not None:
                raise ConfigError(f"config file {self.path}: {why}")
        except ConfigError as e:
            log.error("config reload refused, keeping the running config: %s", e)
            self._on_result(False)
            return False
        self._apply(config)
        self._on_result(True)
        return True

    async def run(self) -> None:
        settling: Fingerprint = None
        while True:
            await asyncio.sleep(self.interval)
            now = fingerprint(self.path)
            if now == self._seen:
                settling = None
            elif now != settling:
                settling = now  # changed: read it once it stands still for one more look
            else:
                self.reload()
