"""After an API outage the operator waits at most max_retry_seconds (5 s by default) before it
tries again: its own retries, and kopf's (its watches too)."""

from __future__ import annotations

from embedding_proxy_operator.model.settings import KOPF_BACKOFFS, Options, api_backoffs


def test_kopfs_retries_wait_at_most_the_ceiling_and_as_long_in_all() -> None:
    backoffs = api_backoffs(Options().max_retry_seconds)
    assert Options().max_retry_seconds == 5
    assert max(backoffs) == 5 and backoffs[:5] == (1, 1, 2, 3, 5)
    # An outage as long as kopf's own retries would outlast is retried through as well.
    assert sum(backoffs) >= sum(KOPF_BACKOFFS) == 54
    assert sum(backoffs[:-1]) < sum(KOPF_BACKOFFS)


def test_a_ceiling_above_kopfs_leaves_kopfs_own() -> None:
    assert api_backoffs(60) == KOPF_BACKOFFS
    assert set(api_backoffs(0.5)) == {0.5}


def test_the_ceiling_is_read_from_the_environment() -> None:
    options = Options.from_env({"EMBEDDING_PROXY_OPERATOR_MAX_RETRY_SECONDS": "2"})
    assert max(api_backoffs(options.max_retry_seconds)) == 2
