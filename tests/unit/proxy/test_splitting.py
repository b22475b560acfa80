from __future__ import annotations

import orjson
import pytest

from embedding_proxy.api.errors import ProxyError
from embedding_proxy.api.splitting import split


def test_compact_vectors_split_without_parsing() -> None:
    assert [bytes(p) for p in split(b"[[1.0,2.5],[-3e-5,4]]", 2)] == [b"[1.0,2.5]", b"[-3e-5,4]"]
    assert [bytes(p) for p in split(b"[[1.0]]", 1)] == [b"[1.0]"]


@pytest.mark.parametrize(
    "data",
    [
        [[{"index": 1, "value": 0.5}], [{"index": 2, "value": 0.1}]],  # /embed_sparse
        [[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.6]]],  # /embed_all
        [[{"id": 1, "text": "a", "special": False, "start": 0, "stop": 1}], []],  # /tokenize
        [[1.0], [2.0, [3]]],  # nested deeper than vectors
    ],
)
def test_other_shapes_split_by_element(data: list[object]) -> None:
    assert [orjson.loads(p) for p in split(orjson.dumps(data), len(data))] == data


def test_spaced_json_still_splits() -> None:
    assert [orjson.loads(p) for p in split(b"[ [1.0, 2.0], [3.0] ]", 2)] == [[1.0, 2.0], [3.0]]


@pytest.mark.parametrize(
    ("raw", "count", "needle"),
    [
        (b"<html>oops</html>", 1, "not JSON"),
        (b'{"a": 1}', 1, "not a list"),
        (b"[[1.0],[2.0]]", 3, "2 results for 3 inputs"),
        (b"[[1.0],[2.", 2, "not JSON"),
    ],
)
def test_broken_answers_are_502(raw: bytes, count: int, needle: str) -> None:
    with pytest.raises(ProxyError) as info:
        split(raw, count)
    assert info.value.status == 502
    assert needle in info.value.message
