"""The operator's one retry loop for API writes (kube.retrying) and how it reads an error."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from embedding_proxy_operator.io import kube
from embedding_proxy_operator.io.kube import ApiError, retrying

LOG = logging.getLogger("test")


class Steps:
    """A step that fails with the given errors, one a call, then answers 'done'."""

    def __init__(self, *errors: ApiError) -> None:
        self.errors, self.calls = list(errors), 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(kube.asyncio, "sleep", sleep)
    return waited


def run(step: Steps, **kwargs: object) -> str:
    options: dict = {"what": "test", "logger": LOG, "max_delay": 1.0, **kwargs}
    return asyncio.run(retrying(step, **options))


def test_conflicts_are_retried_with_a_fresh_round_each_time(sleeps: list[float]) -> None:
    step = Steps(ApiError(422, "Invalid", "test failed"), ApiError(409, "Conflict", "modified"))
    assert run(step) == "done"
    assert step.calls == 3
    assert len(sleeps) == 2 and all(0 < s <= 1.0 for s in sleeps)


def test_backoff_grows_up_to_the_ceiling(sleeps: list[float]) -> None:
    step = Steps(*[ApiError(503, "ServiceUnavailable", "busy") for _ in range(12)])
    assert run(step, max_delay=2.0) == "done"
    assert max(sleeps) <= 2.0 and sleeps[-1] >= 1.0  # half the ceiling at least, with jitter
    assert sleeps[0] <= 0.1


def test_retry_after_is_honoured(sleeps: list[float]) -> None:
    step = Steps(ApiError(429, "TooManyRequests", "slow down", retry_after=3))
    assert run(step, max_delay=1.0) == "done"
    assert sleeps == [3]


def test_gives_up_after_the_attempts_with_the_last_error(sleeps: list[float]) -> None:
    errors = [ApiError(422, "Invalid", f"round {i}") for i in range(5)]
    step = Steps(*errors)
    with pytest.raises(ApiError, match="round 2"):
        run(step, attempts=3)
    assert step.calls == 3 and len(sleeps) == 2


def test_refusals_are_not_retried(sleeps: list[float]) -> None:
    for status in (400, 403, 404):
        step = Steps(ApiError(status, "No", "refused"))
        with pytest.raises(ApiError):
            run(step)
        assert step.calls == 1
    assert sleeps == []


def test_errors_read_the_status_and_the_delay_asked_for() -> None:
    body = {
        "kind": "Status",
        "reason": "TooManyRequests",
        "message": "too many requests, please try again later",
        "details": {"retryAfterSeconds": 2},
    }
    e = kube._error(429, "Too Many Requests", None, json.dumps(body))
    assert (e.status, e.reason, e.retry_after) == (429, "TooManyRequests", 2.0)
    assert e.transient and e.retryable and not e.conflict
    e = kube._error(503, "Service Unavailable", "5", "not json")
    assert (e.reason, e.message, e.retry_after) == ("Service Unavailable", "not json", 5.0)
    e = kube._error(409, "Conflict", "Wed, 21 Oct 2015 07:28:00 GMT", "{}")
    assert e.retry_after is None and e.conflict
