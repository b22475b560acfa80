"""Request bodies, parsed and checked as TEI's serde types are (router/src/http/types.rs).

A body that is not what a route expects is refused the way axum's `Json` extractor refuses it:
422 with "Failed to deserialize the JSON body into the target type: ..." (plain text). Unknown
fields are ignored, as serde ignores them. The messages follow serde's wording but give no line and
column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import Rejection, data_error

Json = Any
Model = str | list[int]  # one model input: a text, or token ids
_U32 = 2**32


def kind(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    return "sequence" if isinstance(value, list) else "map"


def _invalid(path: str, value: Json, expected: str) -> Rejection:
    return data_error(path, f"invalid type: {kind(value)}, expected {expected}")


def _is_u32(value: Json) -> bool:
    return type(value) is int and 0 <= value < _U32


def _is_ids(value: Json) -> bool:
    return isinstance(value, list) and all(_is_u32(v) for v in value)


def struct(body: Json, name: str) -> dict[str, Json]:
    if not isinstance(body, dict):
        raise _invalid("", body, f"struct {name}")
    return body


def required(body: dict[str, Json], key: str) -> Json:
    if key not in body:
        raise data_error("", f"missing field `{key}`")
    return body[key]


def boolean(body: dict[str, Json], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise _invalid(key, value, "a boolean")
    return value


def optional_bool(body: dict[str, Json], key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise _invalid(key, value, "a boolean")
    return value


def optional_usize(body: dict[str, Json], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) is not int:
        raise _invalid(key, value, "usize")
    if value < 0:
        raise data_error(key, f"invalid value: integer `{value}`, expected usize")
    return value


def optional_str(body: dict[str, Json], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise _invalid(key, value, "a string")
    return value


def string(value: Json, path: str) -> str:
    if not isinstance(value, str):
        raise _invalid(path, value, "a string")
    return value


def truncation_direction(body: dict[str, Json], key: str = "truncation_direction") -> str:
    value = body.get(key, "Right")
    if not isinstance(value, str):
        raise _invalid(key, value, "enum TruncationDirection")
    if value not in ("Left", "left", "Right", "right"):
        raise data_error(key, f"unknown variant `{value}`, expected `Left` or `Right`")
    return value.capitalize()


@dataclass(frozen=True)
class Inputs:
    """TEI's `Input`: one input (`batch=False`) or a list of them."""

    items: list[Model]
    batch: bool


def embedding_input(value: Json, path: str) -> Inputs:
    """TEI's untagged `Input` (router/src/http/types.rs): `Single(InputType)` or
    `Batch(Vec<InputType>)`, an `InputType` being a string or token ids. Serde tries `Single`
    first, so `[]` and `[1, 2]` are one input of token ids, and a batch may mix strings and ids."""
    if isinstance(value, str) or _is_ids(value):
        return Inputs([value], batch=False)
    if isinstance(value, list) and all(isinstance(v, str) or _is_ids(v) for v in value):
        return Inputs(list(value), batch=True)
    raise data_error(path, "data did not match any variant of untagged enum Input")


@dataclass(frozen=True)
class EmbedRequest:
    inputs: Inputs
    truncate: bool | None
    truncation_direction: str
    prompt_name: str | None
    normalize: bool
    dimensions: int | None


def embed_request(body: Json, *, pooled: bool = True) -> EmbedRequest:
    """/embed (pooled) and /embed_sparse, /embed_all (no normalize, no dimensions)."""
    b = struct(body, "EmbedRequest")
    return EmbedRequest(
        inputs=embedding_input(required(b, "inputs"), "inputs"),
        truncate=optional_bool(b, "truncate"),
        truncation_direction=truncation_direction(b),
        prompt_name=optional_str(b, "prompt_name"),
        normalize=boolean(b, "normalize", True) if pooled else False,
        dimensions=optional_usize(b, "dimensions") if pooled else None,
    )


@dataclass(frozen=True)
class OpenAIRequest:
    inputs: Inputs
    base64: bool
    dimensions: int | None


def openai_request(body: Json) -> OpenAIRequest:
    b = struct(body, "OpenAICompatRequest")
    value = required(b, "input")
    fmt = b.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        if not isinstance(fmt, str):
            raise _invalid("encoding_format", fmt, "enum EncodingFormat")
        expected = "expected `float` or `base64`"
        raise data_error("encoding_format", f"unknown variant `{fmt}`, {expected}")
    optional_str(b, "model")
    optional_str(b, "user")
    return OpenAIRequest(
        inputs=embedding_input(value, "input"),
        base64=fmt == "base64",
        dimensions=optional_usize(b, "dimensions"),
    )


Sequence = str | tuple[str, str]


@dataclass(frozen=True)
class PredictRequest:
    inputs: list[Sequence]
    batch: bool
    truncate: bool | None
    truncation_direction: str
    raw_scores: bool


_PREDICT_EXPECTED = (
    "a string, a pair of strings [string, string] or a batch of mixed strings and pairs "
    "[[string], [string, string], ...]"
)


def _sequence(value: Json) -> Sequence:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        if len(value) == 1:
            return value[0]
        if len(value) == 2:
            return (value[0], value[1])
        raise data_error("inputs", f"invalid length {len(value)}, expected {_PREDICT_EXPECTED}")
    raise data_error("inputs", f"invalid type: {kind(value)}, expected {_PREDICT_EXPECTED}")


def predict_request(body: Json) -> PredictRequest:
    """TEI's `PredictInput` (a string, a pair, or a batch of both; no token ids)."""
    b = struct(body, "PredictRequest")
    value = required(b, "inputs")
    if isinstance(value, str):
        inputs, batch = [value], False
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        inputs, batch = [_sequence(value)], False  # "a" or a pair ["a", "b"]
    elif isinstance(value, list) and value and not isinstance(value[0], (str, list)):
        raise data_error("inputs[0]", "data did not match any variant of untagged enum Internal")
    elif isinstance(value, list) and value:
        inputs, batch = [_sequence(v) for v in value], True
    else:
        raise data_error(
            "inputs",
            f"invalid length 0, expected {_PREDICT_EXPECTED}"
            if value == []
            else f"invalid type: {kind(value)}, expected {_PREDICT_EXPECTED}",
        )
    return PredictRequest(
        inputs=inputs,
        batch=batch,
        truncate=optional_bool(b, "truncate"),
        truncation_direction=truncation_direction(b),
        raw_scores=boolean(b, "raw_scores", False),
    )


@dataclass(frozen=True)
class RerankRequest:
    query: str
    texts: list[str]
    truncate: bool | None
    truncation_direction: str
    raw_scores: bool
    return_text: bool


def rerank_request(body: Json) -> RerankRequest:
    b = struct(body, "RerankRequest")
    query = string(required(b, "query"), "query")
    texts = required(b, "texts")
    if not isinstance(texts, list):
        raise _invalid("texts", texts, "a sequence")
    for i, t in enumerate(texts):
        string(t, f"texts[{i}]")
    return RerankRequest(
        query=query,
        texts=texts,
        truncate=optional_bool(b, "truncate"),
        truncation_direction=truncation_direction(b),
        raw_scores=boolean(b, "raw_scores", False),
        return_text=boolean(b, "return_text", False),
    )


@dataclass(frozen=True)
class SimilarityRequest:
    source: str
    sentences: list[str]
    truncate: bool | None
    truncation_direction: str
    prompt_name: str | None


def similarity_request(body: Json) -> SimilarityRequest:
    b = struct(body, "SimilarityRequest")
    inputs = struct(required(b, "inputs"), "SimilarityInput")
    source = string(required(inputs, "source_sentence"), "inputs.source_sentence")
    sentences = required(inputs, "sentences")
    if not isinstance(sentences, list):
        raise _invalid("inputs.sentences", sentences, "a sequence")
    for i, s in enumerate(sentences):
        string(s, f"inputs.sentences[{i}]")
    params = b.get("parameters")
    p = {} if params is None else struct(params, "SimilarityParameters")
    return SimilarityRequest(
        source=source,
        sentences=sentences,
        truncate=optional_bool(p, "truncate"),
        truncation_direction=truncation_direction(p),
        prompt_name=optional_str(p, "prompt_name"),
    )


@dataclass(frozen=True)
class TokenizeRequest:
    inputs: list[str]
    batch: bool
    add_special_tokens: bool
    prompt_name: str | None


def tokenize_request(body: Json) -> TokenizeRequest:
    b = struct(body, "TokenizeRequest")
    value = required(b, "inputs")
    if isinstance(value, str):
        inputs, batch = [value], False
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        inputs, batch = list(value), True
    else:
        raise data_error("inputs", "data did not match any variant of untagged enum TokenizeInput")
    return TokenizeRequest(
        inputs=inputs,
        batch=batch,
        add_special_tokens=boolean(b, "add_special_tokens", True),
        prompt_name=optional_str(b, "prompt_name"),
    )


@dataclass(frozen=True)
class DecodeRequest:
    ids: list[list[int]]
    batch: bool
    skip_special_tokens: bool


def decode_request(body: Json) -> DecodeRequest:
    b = struct(body, "DecodeRequest")
    value = required(b, "ids")
    if _is_ids(value):  # [] lands here: one empty sequence, as serde's untagged enum decides
        ids, batch = [value], False
    elif isinstance(value, list) and all(_is_ids(v) for v in value):
        ids, batch = list(value), True
    else:
        raise data_error("ids", "data did not match any variant of untagged enum InputIds")
    return DecodeRequest(
        ids=ids, batch=batch, skip_special_tokens=boolean(b, "skip_special_tokens", True)
    )
