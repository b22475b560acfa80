"""Live reload of the config file: as a Kubernetes ConfigMap volume replaces it (a new directory
and an atomic symlink swap), or on SIGHUP."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from .settings import Config, ConfigError

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


class ConfigWatcher:
    def __init__(
        self,
        path: Path,
        load: Callable[[], Config],
        apply: Callable[[Config], None],
        on_result: Callable[[bool], None],
        interval: float = 1.0,
    ) -> None:
        self.path = path
        self._load = load
        self._apply = apply
        self._on_result = on_result
        self.interval = interval
        self._seen = fingerprint(path)

    def reload(self) -> bool:
        """Read the file again; keep the running config if the new one is invalid."""
        self._seen = fingerprint(self.path)
        try:
            config = self._load()
        except ConfigError as e:
            log.error("config reload failed, keeping the running config: %s", e)
            self._on_result(False)
            return False
        self._apply(config)
        self._on_result(True)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if fingerprint(self.path) != self._seen:
                self.reload()
