"""Deterministic vectors and the token-counting rule."""

from __future__ import annotations

import math
from array import array

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embedding_proxy.simulator.errors import ErrorType, TeiError
from embedding_proxy.simulator.tokens import count_tokens, encode, encode_pair
from embedding_proxy.simulator.vectors import (
    embedding,
    input_key,
    vector_bytes,
    vector_from_key,
    vector_json,
)


def f32(values: list[float]) -> list[float]:
    return array("f", values).tolist()


@given(st.text(min_size=1), st.sampled_from([None, 1, 64, 768]), st.booleans())
def test_same_text_same_vector_and_json_reads_back_the_float32_values(
    text: str, dimensions: int | None, normalize: bool
) -> None:
    v = embedding(text, normalize=normalize, dimensions=dimensions)
    assert len(v) == (dimensions or 768)
    assert embedding(text, normalize=normalize, dimensions=dimensions) == v
    exact = vector_from_key(input_key(text), normalize=normalize, dimensions=dimensions)
    assert f32(v) == exact  # each printed value reads back as the float32 computed
    assert array("f", exact).tobytes() == vector_bytes(
        input_key(text), normalize=normalize, dimensions=dimensions
    )
    if normalize:
        assert math.isclose(math.hypot(*v), 1.0, abs_tol=1e-6)


def test_vectors_are_written_as_tei_writes_float32() -> None:
    body = vector_json(b"x")
    # The shortest float32 digits: about 1.7 times fewer bytes than float64's for 768 values.
    assert len(orjson.dumps(vector_from_key(b"x"))) > 1.6 * len(body)
    for text in body[1:-1].split(b","):
        value = float(text)
        assert text == orjson.dumps(value)  # no digit more than a double needs to read back
        assert len(text.lstrip(b"-0.").rstrip(b"0")) <= 9


def test_different_inputs_get_different_vectors() -> None:
    vectors = {tuple(embedding(f"text {i}")) for i in range(500)}
    assert len(vectors) == 500
    assert embedding("1 2 3") != embedding([1, 2, 3])  # a text and token ids are different inputs


def test_normalize_false_gives_a_raw_vector_pointing_the_same_way() -> None:
    raw, unit = embedding("hello", normalize=False), embedding("hello")
    norm = math.hypot(*raw)
    assert norm > 2
    assert all(math.isclose(r / norm, u, abs_tol=1e-6) for r, u in zip(raw, unit, strict=True))


def test_dimensions_truncate_then_renormalise() -> None:
    full, short = embedding("hello"), embedding("hello", dimensions=64)
    assert len(short) == 64 and math.isclose(math.hypot(*short), 1.0, abs_tol=1e-6)
    scale = math.hypot(*full[:64])
    assert all(math.isclose(a / scale, b, abs_tol=1e-6) for a, b in zip(full, short, strict=False))
    raw = embedding("hello", normalize=False, dimensions=64)
    assert raw == embedding("hello", normalize=False)[:64]


def test_model_dimensions_and_base64_bytes() -> None:
    assert len(embedding("x", model_dimensions=384)) == 384
    assert len(vector_bytes(b"x")) == 768 * 4
    assert vector_from_key(b"x") == f32(embedding("x"))


def test_token_rule() -> None:
    assert count_tokens("What is Deep Learning?") == 6
    assert count_tokens("  spaced\tout \n words ") == 5
    assert count_tokens(" ".join(["word"] * 126)) == 128


def test_encode_checks_length_as_tei_does() -> None:
    assert encode("a b c", truncate=False, max_input_length=8).tokens == 5
    with pytest.raises(TeiError) as e:
        encode("w " * 20, truncate=False, max_input_length=8)
    assert e.value.error_type is ErrorType.VALIDATION and e.value.status == 422
    assert e.value.status_for(before_1_9=True) == 413
    assert e.value.message == (
        "Input validation error: `inputs` must have less than 8 tokens. Given: 22"
    )
    with pytest.raises(TeiError) as e:
        encode("", truncate=True, max_input_length=8)
    assert e.value.error_type is ErrorType.EMPTY and e.value.status == 400
    with pytest.raises(TeiError, match=r"must have less than 1000 characters\. Given: 1001"):
        encode("x" * 1001, truncate=False, max_input_length=4)
    # The limit counts the input's own characters, not the prompt's (tokenize_input).
    assert encode("x" * 1000, truncate=False, max_input_length=4, prompt="p: ").tokens == 4
    # With truncation TEI cuts the text to the limit first, then truncates its tokens.
    assert encode("w " * 600, truncate=True, max_input_length=4).tokens == 4


def test_truncation_keeps_words_from_the_chosen_side() -> None:
    text = " ".join(f"w{i}" for i in range(10))
    right = encode(text, truncate=True, direction="Right", max_input_length=5)
    left = encode(text, truncate=True, direction="Left", max_input_length=5)
    assert right.tokens == left.tokens == 5
    assert right.pieces == ("w0", "w1", "w2") and left.pieces == ("w7", "w8", "w9")
    assert vector_from_key(right.key) == f32(embedding("w0 w1 w2"))


def test_token_ids_and_pairs() -> None:
    ids = encode([5, 6, 7], truncate=False, max_input_length=8)
    assert ids.tokens == 3 and ids.chars == 3  # TEI's count_chars: one per id
    assert vector_from_key(ids.key) == f32(embedding([5, 6, 7]))
    pair = encode_pair("a b", "c", truncate=False, direction="Right", max_input_length=10)
    assert pair.tokens == 6
    cut = encode_pair("a b c d", "e", truncate=True, direction="Right", max_input_length=5)
    assert cut.tokens == 5
