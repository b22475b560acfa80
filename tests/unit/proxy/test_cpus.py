"""`server.workers: auto`: the container's CPU limit, from cgroup files (given here as a dict)."""

from __future__ import annotations

import pytest

from embedding_proxy.config.settings import ConfigError, validate
from embedding_proxy.workers import cpus


def reader(files: dict[str, str]) -> cpus.Read:
    return files.get


V2 = {"/proc/self/cgroup": "0::/\n"}
V1 = {"/proc/self/cgroup": "4:memory:/x\n3:cpu,cpuacct:/\n"}


@pytest.mark.parametrize(
    ("files", "affinity", "expected"),
    [
        ({**V2, "/sys/fs/cgroup/cpu.max": "200000 100000\n"}, 16, 2),
        ({**V2, "/sys/fs/cgroup/cpu.max": "150000 100000\n"}, 16, 2),  # 1.5 CPUs: rounded up
        ({**V2, "/sys/fs/cgroup/cpu.max": "50000 100000\n"}, 16, 1),  # 500m: at least 1
        ({**V2, "/sys/fs/cgroup/cpu.max": "max 100000\n"}, 6, 6),  # no limit: the affinity
        ({**V2, "/sys/fs/cgroup/cpu.max": "800000 100000\n"}, 2, 2),  # not above the affinity
        (
            {
                "/proc/self/cgroup": "0::/kubepods/pod1/c1\n",
                "/sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "max 100000",
                "/sys/fs/cgroup/kubepods/pod1/cpu.max": "300000 100000",
            },
            16,
            3,
        ),  # the tightest on the way up
        (
            {
                **V1,
                "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "400000",
                "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000",
            },
            16,
            4,
        ),
        (
            {
                **V1,
                "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1",
                "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000",
            },
            3,
            3,
        ),
        ({}, 5, 5),  # no cgroup files at all
        ({**V2, "/sys/fs/cgroup/cpu.max": "garbage"}, 4, 4),
    ],
)
def test_the_cpu_limit_rounded_up(files: dict[str, str], affinity: int, expected: int) -> None:
    assert cpus.available_cpus(reader(files), lambda: affinity) == expected


def test_this_machine_gives_at_least_one() -> None:
    assert cpus.workers("auto") >= 1
    assert cpus.workers(3) == 3


@pytest.mark.parametrize("value", ["auto", "1", 4, " 2 "])
def test_workers_setting_accepts(value: object) -> None:
    assert validate({"server": {"workers": value}}).server.workers in ("auto", 1, 2, 4)


@pytest.mark.parametrize("value", ["0", "two", "1.5", -1, 2000, True])
def test_workers_setting_refuses_with_one_line(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^server\.workers: .*auto or a whole number"):
        validate({"server": {"workers": value}})
