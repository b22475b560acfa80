"""Which pods failed to load their config file since they last loaded the version they serve
(pure). A proxy that cannot load the file keeps the config it has, and so goes on reporting the
current version in `embedding_proxy_config_info`; only its failed-reload count rises. Counting it
as applied would hide that the file it was given is not what it runs.

The counts are per process, so the operator remembers, per pod, the failed count at the moment
it last saw the pod load its version: a new version reported, an `ok` reload counted, or the
counters back at a lower value (the proxy restarted and read the file afresh). A pod first seen
by this operator process counts as loaded then."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .scrape import ProxyReading


@dataclass(frozen=True)
class Loaded:
    """What was last seen of one pod's proxy."""

    version: str | None
    ok: float
    failed: float
    # The failed count when it last loaded `version`.
    failed_at_load: float

    @property
    def failed_since(self) -> float:
        """Reloads that failed since it last loaded its version."""
        return self.failed - self.failed_at_load


def track(before: Mapping[str, Loaded], readings: Mapping[str, ProxyReading]) -> dict[str, Loaded]:
    """Each pod's `Loaded` after this poll's readings (pods not read now are forgotten). When
    an `ok` and a failed reload both happened since the poll before, the `ok` is taken as the
    later one: the file is then one the proxy loaded."""
    out: dict[str, Loaded] = {}
    for pod, reading in readings.items():
        ok, failed = reading.ok_reloads or 0.0, reading.failed_reloads or 0.0
        last = before.get(pod)
        loaded = (
            last is None
            or last.version != reading.config_version
            or ok > last.ok
            or ok < last.ok
            or failed < last.failed
        )
        at_load = failed if loaded or last is None else last.failed_at_load
        out[pod] = Loaded(reading.config_version, ok, failed, at_load)
    return out
