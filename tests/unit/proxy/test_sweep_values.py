"""What `bench --sweep` takes: numbers for the bench's own flags, and `auto` besides for the
proxy's max-concurrency."""

from __future__ import annotations

import argparse

import pytest

from embedding_proxy.bench.run import _proxy_max_concurrency
from embedding_proxy.bench.sweep import parse_sweep


def test_max_concurrency_takes_numbers_and_auto() -> None:
    assert parse_sweep("max-concurrency=1,2,auto") == ("max_concurrency", [1, 2, "auto"])
    assert parse_sweep("concurrency=4,16") == ("concurrency", [4, 16])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("concurrency=4,auto", "must be integers"),
        ("max-concurrency=fast", "must be integers or auto"),
        ("max-concurrency=0,auto", "at least 1"),
    ],
)
def test_other_values_are_refused(value: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_sweep(value)


def test_ideal_runs_at_the_proxys_number_or_at_4_under_auto() -> None:
    assert _proxy_max_concurrency(["--max-concurrency", "6"]) == 6
    assert _proxy_max_concurrency(["--max-concurrency", "auto"]) == 4
    assert _proxy_max_concurrency([]) == 4
