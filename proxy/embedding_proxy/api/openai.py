"""OpenAI's embeddings dialect, served from TEI's /embed so both dialects share batches. Pure."""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Sequence

import orjson

from ..config.settings import LimitsConfig
from .errors import VALIDATION, ProxyError
from .tei import (
    BatchRequest,
    check_inputs,
    cost,
    decode_object,
    group,
    parse_embed_inputs,
    quoted,
    refuse_repeats,
)

ENCODINGS = ("float", "base64")
# TEI's OpenAICompatRequest; any other field is ignored, as TEI ignores it.
FIELDS = quoted("input", "model", "user", "encoding_format", "dimensions")


def parse(body: bytes, limits: LimitsConfig) -> tuple[BatchRequest, str]:
    """(the batch request for TEI's /embed, the encoding format asked for)."""
    data = decode_object(body)
    refuse_repeats(body, FIELDS)
    if "input" not in data:
        raise ProxyError(
            422,
            "Failed to deserialize the JSON body into the target type: missing field `input`",
            VALIDATION,
        )
    items, _ = parse_embed_inputs(data["input"])
    check_inputs(items, limits)
    # Absent means float; anything else must name a format (TEI's field is not an Option, so
    # null is refused too, as are [], {}, 0 and false).
    encoding = data.get("encoding_format", "float")
    if not isinstance(encoding, str):
        raise ProxyError(
            422,
            "Failed to deserialize the JSON body into the target type: encoding_format: "
            f"invalid type: {_kind(encoding)}, expected `float` or `base64`",
            VALIDATION,
        )
    if encoding not in ENCODINGS:
        raise ProxyError(
            422,
            "Failed to deserialize the JSON body into the target type: encoding_format: "
            f"unknown variant `{encoding}`, expected `float` or `base64`",
            VALIDATION,
        )
    for name in ("model", "user"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise ProxyError(422, f"{name}: expected a string", VALIDATION)
    params: dict[str, object] = {}
    dimensions = data.get("dimensions")
    if dimensions is not None:
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions <= 0:
            raise ProxyError(422, "dimensions: expected a positive integer", VALIDATION)
        params["dimensions"] = dimensions
    request = BatchRequest(group("/embed", params), items, [cost(i) for i in items])
    return request, encoding


def _kind(value: object) -> str:
    """serde's name for the JSON type of `value`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"number `{value}`"
    return "sequence" if isinstance(value, list) else "map"


def to_base64(fragment: bytes) -> bytes:
    """A JSON float list as OpenAI's base64: little-endian float32, as its client decodes it."""
    values = array("f", orjson.loads(fragment))
    if sys.byteorder != "little":
        values.byteswap()
    return base64.b64encode(values.tobytes())


def render_model(name: str, created: int) -> bytes:
    """`GET /v1/models/{id}` in OpenAI's shape: the model TEI serves."""
    return orjson.dumps(_model(name, created))


def render_models(name: str, created: int) -> bytes:
    """`GET /v1/models` in OpenAI's shape: the one model TEI serves."""
    return orjson.dumps({"object": "list", "data": [_model(name, created)]})


def _model(name: str, created: int) -> dict[str, object]:
    return {"id": name, "object": "model", "created": created, "owned_by": "tei"}


def render(fragments: Sequence[bytes], tokens: int, model: str, encoding: str) -> bytes:
    """OpenAI's list of embeddings, joined once: each vector is copied once, into the answer."""
    out = [b'{"object":"list","data":[']
    for index, fragment in enumerate(fragments):
        if index:
            out.append(b",")
        out.append(b'{"object":"embedding","index":%d,"embedding":' % index)
        if encoding == "base64":
            out.extend((b'"', to_base64(fragment), b'"}'))
        else:
            out.extend((fragment, b"}"))
    out.append(b'],"model":')
    out.append(orjson.dumps(model))
    out.append(b',"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (tokens, tokens))
    return b"".join(out)
