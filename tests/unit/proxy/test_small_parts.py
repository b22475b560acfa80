"""Retry budget and backoff, token shares, the moving average, upstream error shapes."""

from __future__ import annotations

import random

import pytest

from embedding_proxy.api.errors import from_upstream
from embedding_proxy.api.splitting import share
from embedding_proxy.housekeeping import caps_of
from embedding_proxy.telemetry.smoothing import MovingAverage
from embedding_proxy.upstream.info import UpstreamInfo
from embedding_proxy.upstream.retry import RetryBudget, backoff_seconds, retry_after_seconds


def test_retry_budget_limits_retries_to_a_share_of_traffic() -> None:
    budget = RetryBudget(ratio=0.1, reserve=2)
    spent = 0
    for _ in range(100):
        budget.record_attempt()
        if budget.try_spend():
            spent += 1
    assert spent <= 2 + 10  # reserve + 10% of 100 attempts
    assert spent >= 10


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    waits = [backoff_seconds(a, 100, 1000, rng) for a in range(1, 8)]
    assert 0.05 <= waits[0] <= 0.1
    assert all(0.5 <= w <= 1.0 for w in waits[4:])
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None


def test_token_shares_add_up() -> None:
    assert sum(share(101, ["aaaa", "b", "cc", [1, 2, 3]])) == 101
    assert share(10, ["xxxxx", "xxxxx"]) == [5, 5]
    assert share(0, ["a"]) == [0]


def test_moving_average_window() -> None:
    avg = MovingAverage(4)
    assert avg.value == 0
    for v in (4, 4, 4, 4):
        avg.add(v)
    assert avg.value == 4
    avg.add(0)
    avg.add(0)
    assert avg.value == 2


def test_upstream_errors_keep_their_shape() -> None:
    e = from_upstream(422, b'{"error":"too long","error_type":"Validation"}')
    assert (e.status, e.message, e.error_type) == (422, "too long", "Validation")
    html = from_upstream(500, b"<html>Internal</html>")
    assert html.status == 502 and "Internal" in html.message


def test_info_parse_defaults() -> None:
    info = UpstreamInfo.parse({"model_id": "m", "max_client_batch_size": 8})
    assert caps_of(info).max_batch_size == 8
    assert info.max_concurrent_requests == 512


@pytest.mark.parametrize(
    ("model_type", "root"),
    [
        ({"embedding": {"pooling": "cls"}}, "/embed"),
        ({"embedding": {"pooling": "splade"}}, "/embed_sparse"),
        ({"classifier": {"id2label": {"0": "a", "1": "b"}, "label2id": {}}}, "/predict"),
        ({"reranker": {"id2label": {"0": "a"}, "label2id": {}}}, None),  # /rerank: forwarded
        (None, None),
        ("embedding", None),
    ],
)
def test_info_model_type_decides_the_root_route(model_type: object, root: str | None) -> None:
    """TEI serves `POST /` and `/invocations` by its model type (router/src/http/server.rs)."""
    assert UpstreamInfo.parse({"model_type": model_type}).root_route == root


def test_info_served_model_name_falls_back_to_the_model_id() -> None:
    """TEI 1.9's /info has served_model_name (default: the model id); 1.8's has none."""
    assert UpstreamInfo.parse({"model_id": "m", "served_model_name": "s"}).served_model_name == "s"
    assert UpstreamInfo.parse({"model_id": "m"}).served_model_name == "m"
    assert UpstreamInfo.parse({"model_id": "m", "served_model_name": ""}).served_model_name == "m"
