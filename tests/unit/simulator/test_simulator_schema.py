"""Request bodies: accepted shapes, and refusals worded as axum and serde word them."""

from __future__ import annotations

import pytest

from embedding_proxy.simulator import schema
from embedding_proxy.simulator.errors import Rejection
from embedding_proxy.simulator.faults import Faults, parse_fault


def test_embedding_inputs() -> None:
    # TEI 1.9's untagged `Input` (router/src/http/types.rs): Single(InputType) is tried first,
    # so `[]` and `[1, 2]` are one input of token ids; a batch may mix texts and ids.
    assert schema.embedding_input("a", "inputs") == schema.Inputs(["a"], batch=False)
    assert schema.embedding_input(["a", "b"], "inputs") == schema.Inputs(["a", "b"], batch=True)
    assert schema.embedding_input([], "inputs") == schema.Inputs([[]], batch=False)
    assert schema.embedding_input([1, 2], "inputs") == schema.Inputs([[1, 2]], batch=False)
    assert schema.embedding_input([[1], [2]], "inputs").batch
    mixed = schema.embedding_input(["a", [1, 2], "b"], "inputs")
    assert mixed == schema.Inputs(["a", [1, 2], "b"], batch=True)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"inputs": 3}, "inputs: data did not match any variant of untagged enum Input"),
        ({"inputs": ["a", 1]}, "inputs: data did not match any variant"),
        ({"inputs": [-1]}, "inputs: data did not match any variant"),
        ({"inputs": ["a", [2**32]]}, "inputs: data did not match any variant"),
        ({}, "missing field `inputs`"),
        ([], "invalid type: sequence, expected struct EmbedRequest"),
        ({"inputs": "a", "normalize": None}, "normalize: invalid type: null, expected a boolean"),
        ({"inputs": "a", "dimensions": -1}, "dimensions: invalid value: integer `-1`"),
        ({"inputs": "a", "dimensions": True}, "dimensions: invalid type: boolean `true`"),
        ({"inputs": "a", "truncation_direction": "up"}, "unknown variant `up`"),
    ],
)
def test_embed_refusals(body: object, needle: str) -> None:
    with pytest.raises(Rejection) as e:
        schema.embed_request(body)
    assert e.value.status == 422
    assert e.value.text.startswith("Failed to deserialize the JSON body into the target type: ")
    assert needle in e.value.text


def test_embed_defaults_and_unknown_fields() -> None:
    req = schema.embed_request({"inputs": "a", "extra": 1, "truncation_direction": "left"})
    assert req.normalize is True and req.truncate is None and req.dimensions is None
    assert req.truncation_direction == "Left"


def test_openai_and_predict_shapes() -> None:
    req = schema.openai_request({"input": "a", "encoding_format": "base64", "model": "m"})
    assert req.base64 and not req.inputs.batch
    with pytest.raises(Rejection, match="missing field `input`"):  # 1.9.3 has no `messages`
        schema.openai_request({"model": "m", "messages": []})
    with pytest.raises(Rejection, match="unknown variant `int8`"):
        schema.openai_request({"input": "a", "encoding_format": "int8"})
    assert schema.predict_request({"inputs": ["a", "b"]}).inputs == [("a", "b")]
    batch = schema.predict_request({"inputs": [["a"], ["b", "c"]]})
    assert batch.batch and batch.inputs == ["a", ("b", "c")]
    with pytest.raises(Rejection, match="invalid length 3"):
        schema.predict_request({"inputs": ["a", "b", "c"]})
    with pytest.raises(Rejection, match="untagged enum Internal"):  # no token ids for /predict
        schema.predict_request({"inputs": [1, 2]})
    assert schema.decode_request({"ids": []}).ids == [[]]  # serde picks the single form


def test_fault_specs() -> None:
    fault = parse_fault({"status": 503, "times": 2})
    assert fault.replaces_answer and fault.answer()[0] == 503
    assert b'"error_type":"Unhealthy"' in fault.answer()[1]
    for bad in ({"status": "x"}, {"nope": 1}, {"times": 0}, {"routes": "/embed"}, []):
        with pytest.raises(ValueError):
            parse_fault(bad)
    assert parse_fault({"wrong_count": True}).mangle(b"[[1],[2]]") == b"[[1]]"
    assert parse_fault({"truncate_body": True}).mangle(b"[[1],[2]]") == b"[[1]"


def test_faults_count_down_and_filter_routes() -> None:
    faults = Faults()
    faults.set(parse_fault({"delay_ms": 5, "times": 2, "routes": ["/embed"]}))
    assert faults.take("/predict") is None
    assert faults.take("/embed") is not None and faults.take("/embed") is not None
    assert faults.take("/embed") is None and faults.current is None
    faults.set(parse_fault({"delay_ms": 5}))
    assert all(faults.take("/embed") for _ in range(10))  # no `times`: until cleared
    faults.clear()
    assert faults.take("/embed") is None
