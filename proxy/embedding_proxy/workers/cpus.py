"""How many CPUs this container may use: the `auto` of `server.workers`.

The CPU limit of the container's cgroup (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`,
the tightest on the way up the hierarchy), rounded up; without a limit, the CPUs this process may
run on (its affinity). Never more than that affinity (a quota of 8 on 2 CPUs runs on 2), never
less than 1.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import PurePosixPath

Read = Callable[[str], str | None]
CGROUP_ROOT = "/sys/fs/cgroup"


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _ancestors(path: str) -> list[str]:
    """`/a/b` → `/a/b`, `/a`, `/`."""
    p = PurePosixPath(path or "/")
    return [str(p), *(str(a) for a in p.parents)]


def _own_cgroups(read: Read) -> dict[str, str]:
    """Controller → this process's cgroup path, from /proc/self/cgroup (v2: key "")."""
    out: dict[str, str] = {}
    for line in (read("/proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                out[controller] = parts[2]
    return out


def _v2_limit(text: str | None) -> float | None:
    fields = (text or "").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_limit(quota: str | None, period: str | None) -> float | None:
    try:
        q, p = int((quota or "").strip()), int((period or "").strip())
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpu_limit(read: Read = read_text, root: str = CGROUP_ROOT) -> float | None:
    """The container's CPU limit in CPUs (fractional), or None where it has none."""
    own = _own_cgroups(read)
    limits: list[float] = []
    # v2: the unified hierarchy. Inside a container's cgroup namespace its own path reads "/",
    # and the root's cpu.max is then the container's.
    if "" in own:
        for path in _ancestors(own[""]):
            limit = _v2_limit(read(f"{root}{path.rstrip('/')}/cpu.max"))
            if limit is not None:
                limits.append(limit)
    # v1: the cpu controller's quota and period.
    base = f"{root}/cpu"
    for path in _ancestors(own.get("cpu", "/")):
        d = f"{base}{path.rstrip('/')}"
        limit = _v1_limit(read(f"{d}/cpu.cfs_quota_us"), read(f"{d}/cpu.cfs_period_us"))
        if limit is not None:
            limits.append(limit)
    return min(limits) if limits else None


def available_cpus(
    read: Read = read_text, affinity: Callable[[], int] | None = None, root: str = CGROUP_ROOT
) -> int:
    """The CPU limit rounded up, at most the CPUs this process may run on, at least 1."""
    usable = (affinity or _affinity)()
    limit = cgroup_cpu_limit(read, root)
    count = usable if limit is None else min(usable, math.ceil(limit - 1e-9))
    return max(1, count)


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def workers(setting: int | str) -> int:
    """`server.workers` as a number: `auto` is `available_cpus()`."""
    return available_cpus() if setting == "auto" else int(setting)
