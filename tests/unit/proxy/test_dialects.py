"""Parsing and rendering of TEI's and OpenAI's request and answer shapes."""

from __future__ import annotations

import base64
import struct

import orjson
import pytest

from embedding_proxy.api import openai as openai_api
from embedding_proxy.api import tei as tei_api
from embedding_proxy.api.errors import ProxyError
from embedding_proxy.config.settings import LimitsConfig

LIMITS = LimitsConfig()


def body(obj: object) -> bytes:
    return orjson.dumps(obj)


@pytest.mark.parametrize(
    ("inputs", "items", "form"),
    [
        ("hi", ["hi"], "single"),
        (["a", "b"], ["a", "b"], "list"),
        ([1, 2, 3], [[1, 2, 3]], "single"),
        ([[1, 2], [3]], [[1, 2], [3]], "list"),
        (["a", [5, 6]], ["a", [5, 6]], "list"),
    ],
)
def test_embed_inputs_follow_tei(inputs: object, items: list[object], form: str) -> None:
    req = tei_api.parse("/embed", body({"inputs": inputs}), LIMITS)
    assert (req.items, req.form, req.route) == (items, form, "/embed")


def test_defaults_spelled_out_share_the_group_of_defaults_left_out() -> None:
    plain = tei_api.parse("/embed", body({"inputs": "a"}), LIMITS)
    spelled = tei_api.parse(
        "/embed", body({"inputs": "b", "normalize": True, "truncate": None}), LIMITS
    )
    other = tei_api.parse("/embed", body({"inputs": "c", "normalize": False}), LIMITS)
    assert plain.key == spelled.key
    assert other.key != plain.key
    assert other.params == {"normalize": False}


@pytest.mark.parametrize("route", sorted(tei_api.BATCH_ROUTES - {"/tokenize"}))
@pytest.mark.parametrize("truncate", [False, True])
def test_truncate_given_is_sent_as_given(route: str, truncate: bool) -> None:
    """TEI reads a missing `truncate` as its --auto-truncate (router/src/http/server.rs:
    `req.truncate.unwrap_or(info.auto_truncate)`), so neither value may be dropped."""
    req = tei_api.parse(route, body({"inputs": "a", "truncate": truncate}), LIMITS)
    assert req.params == {"truncate": truncate}
    assert orjson.loads(req.group.payload(["a"]))["truncate"] is truncate
    assert req.key != tei_api.parse(route, body({"inputs": "a"}), LIMITS).key


def test_routes_have_separate_groups() -> None:
    keys = {tei_api.parse(r, body({"inputs": "a"}), LIMITS).key for r in tei_api.BATCH_ROUTES}
    assert len(keys) == len(tei_api.BATCH_ROUTES)


@pytest.mark.parametrize(
    ("raw", "status", "error_type"),
    [
        (b"{not json", 400, "Validation"),
        (b"[1, 2]", 422, "Validation"),
        (body({"inputs": []}), 400, "Empty"),
        (body({"inputs": 5}), 422, "Validation"),
        (body({"inputs": [None]}), 422, "Validation"),
        (body({"text": "x"}), 422, "Validation"),
        (body({"inputs": ["a"] * 1025}), 413, "Validation"),
        (body({"inputs": "x" * 100_001}), 413, "Validation"),
    ],
)
def test_bad_tei_bodies_get_tei_errors(raw: bytes, status: int, error_type: str) -> None:
    with pytest.raises(ProxyError) as info:
        tei_api.parse("/embed", raw, LIMITS)
    assert (info.value.status, info.value.error_type) == (status, error_type)
    assert orjson.loads(info.value.tei_body())["error"]


def test_simple_form_renders_a_single_embedding() -> None:
    req = tei_api.parse("/embed", body({"input": "text"}), LIMITS)
    assert req.form == "simple"
    assert orjson.loads(tei_api.render(req, [b"[0.5,1.0]"])) == {"embedding": [0.5, 1.0]}


def test_predict_single_and_pair_and_batch() -> None:
    single = tei_api.parse("/predict", body({"inputs": "a"}), LIMITS)
    pair = tei_api.parse("/predict", body({"inputs": ["a", "b"]}), LIMITS)
    batch = tei_api.parse("/predict", body({"inputs": [["a"], ["b", "c"]]}), LIMITS)
    assert (single.items, single.form) == ([["a"]], "single")
    assert (pair.items, pair.form) == ([["a", "b"]], "single")
    assert (batch.items, batch.form) == ([["a"], ["b", "c"]], "list")
    fragment = b'[{"score":0.9,"label":"x"}]'
    assert tei_api.render(single, [fragment]) == fragment  # TEI answers a single one unnested
    assert orjson.loads(tei_api.render(batch, [fragment, fragment])) == [orjson.loads(fragment)] * 2


def test_tokenize_takes_no_token_ids() -> None:
    with pytest.raises(ProxyError):
        tei_api.parse("/tokenize", body({"inputs": [1, 2]}), LIMITS)


def test_openai_request_maps_to_embed_and_shares_its_group() -> None:
    req, encoding = openai_api.parse(body({"input": ["a", "b"], "model": "m"}), LIMITS)
    plain = tei_api.parse("/embed", body({"inputs": "c"}), LIMITS)
    assert (req.route, req.items, encoding, req.key) == ("/embed", ["a", "b"], "float", plain.key)
    dims, _ = openai_api.parse(body({"input": "a", "dimensions": 8}), LIMITS)
    assert dims.params == {"dimensions": 8}


@pytest.mark.parametrize(
    "bad",
    [
        {"model": "m"},
        {"input": "a", "encoding_format": "hex"},
        {"input": "a", "dimensions": -1},
        {"input": []},
        {"input": "a", "model": 5},
    ],
)
def test_openai_bad_requests(bad: dict[str, object]) -> None:
    with pytest.raises(ProxyError) as info:
        openai_api.parse(body(bad), LIMITS)
    shaped = orjson.loads(info.value.openai_body())
    assert set(shaped) == {"message", "code", "type"}
    assert shaped["code"] == info.value.status


def test_openai_render_float_and_base64_agree() -> None:
    fragments = [b"[0.25,-1.5,3.0]", b"[1.0,2.0,4.0]"]
    as_float = orjson.loads(openai_api.render(fragments, 7, "model-x", "float"))
    as_b64 = orjson.loads(openai_api.render(fragments, 7, "model-x", "base64"))
    assert as_float["model"] == "model-x"
    assert as_float["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert [d["index"] for d in as_float["data"]] == [0, 1]
    for f, b in zip(as_float["data"], as_b64["data"], strict=True):
        raw = base64.b64decode(b["embedding"])
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == f["embedding"]


def test_unknown_fields_are_ignored_as_tei_ignores_them() -> None:
    plain = tei_api.parse("/embed", body({"inputs": "a"}), LIMITS)
    for i in range(3):
        junk = tei_api.parse("/embed", body({"inputs": "a", "junk": f"{i}-x", "x": [i]}), LIMITS)
        assert (junk.params, junk.key) == ({}, plain.key)
    # A field of another route is unknown here too: /predict has no `normalize`.
    predict = tei_api.parse("/predict", body({"inputs": "a", "normalize": False}), LIMITS)
    assert predict.params == {}
    req, _ = openai_api.parse(body({"input": "a", "junk": "y", "normalize": False}), LIMITS)
    assert req.key == plain.key


@pytest.mark.parametrize(
    ("route", "raw"),
    [
        ("/embed", b'{"inputs": "a", "inputs": "b"}'),
        ("/embed", b'{"inputs": "a", "normalize": true, "normalize": false}'),
        ("/embed", b'{"inputs": "a", "\\u0069nputs": "b"}'),  # the same key to serde
        ("/embed", b'{"input": "a", "input": "b"}'),
        ("/predict", b'{"inputs": "a", "raw_scores": true, "raw_scores": true}'),
        ("/tokenize", b'{"inputs": "a", "add_special_tokens": true, "add_special_tokens": 1}'),
    ],
)
def test_a_known_field_given_twice_is_refused_as_serde_refuses_it(route: str, raw: bytes) -> None:
    with pytest.raises(ProxyError) as info:
        tei_api.parse(route, raw, LIMITS)
    assert info.value.status == 422 and "duplicate field" in info.value.message


def test_repeats_that_serde_accepts_are_accepted() -> None:
    # An unknown field twice, a known name inside a string, a nested object's repeated keys.
    for raw in (
        b'{"inputs": "a", "junk": 1, "junk": 2}',
        b'{"inputs": "\\"inputs\\" \\"inputs\\"", "normalize": true}',
        b'{"inputs": "caf\\u00e9"}',
    ):
        assert tei_api.parse("/embed", raw, LIMITS).items
    with pytest.raises(ProxyError) as info:  # nested: the inputs' type is wrong, not a repeat
        tei_api.parse("/embed", b'{"inputs": [{"a": 1, "a": 2}]}', LIMITS)
    assert "duplicate" not in info.value.message


@pytest.mark.parametrize(
    "raw",
    [
        b'{"input": "a", "encoding_format": []}',
        b'{"input": "a", "encoding_format": {}}',
        b'{"input": "a", "encoding_format": 0}',
        b'{"input": "a", "encoding_format": false}',
        b'{"input": "a", "encoding_format": null}',
        b'{"input": "a", "encoding_format": ""}',
        b'{"input": "a", "encoding_format": "float", "encoding_format": "base64"}',
        b'{"input": "a", "model": "m", "model": "n"}',
    ],
)
def test_openai_fields_are_checked_as_tei_checks_them(raw: bytes) -> None:
    with pytest.raises(ProxyError) as info:
        openai_api.parse(raw, LIMITS)
    assert info.value.status == 422


def test_huge_parameters_make_no_group() -> None:
    ok = tei_api.parse("/embed", body({"inputs": "a", "prompt_name": "q" * 1000}), LIMITS)
    assert ok.params == {"prompt_name": "q" * 1000}
    with pytest.raises(ProxyError) as info:
        tei_api.parse("/embed", body({"inputs": "a", "prompt_name": "q" * 5000}), LIMITS)
    assert info.value.status == 413


def test_a_deep_body_that_might_repeat_a_field_is_refused_not_crashed() -> None:
    deep = b'{"inputs": "a", "normalize": ' + b"[" * 1010 + b"]" * 1010 + b', "inputs": "b"}'
    with pytest.raises(ProxyError) as info:
        tei_api.parse("/embed", deep, LIMITS)
    assert info.value.status == 422 and "recursion" in info.value.message
