"""TEI's published OpenAPI document (tests/data/tei/openapi-1.9.3.json, see its NOTICE) as JSON
Schema validators for TEI's answers, route by route and status by status.

OpenAPI 3.0's `nullable` becomes a JSON Schema `null` type, and every object is closed (TEI's serde
types write no field they do not declare), so an answer with a field too many fails as one with a
field missing. Where TEI's code and its document disagree, the code wins; `CODE_OVER_DOCUMENT` lists
each place.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

DOCUMENT = Path(__file__).parents[1] / "data" / "tei" / "openapi-1.9.3.json"

CODE_OVER_DOCUMENT = {
    "OpenAICompatErrorResponse.type": (
        "router/src/http/types.rs renames the field `error_type` to `type` when it serialises "
        '(`#[serde(rename(serialize = "type"))]`); the document still calls it `error_type`'
    ),
    "422 for Validation": (
        "TEI 1.9 answers a Validation error (too many inputs, too long an input) with 422 "
        "(server.rs, `From<&ErrorType> for StatusCode`); the document still describes it as 413 "
        "'Batch size error'. Its 422 entry has the same ErrorResponse body, which the answer "
        "must match"
    ),
    "plain-text rejections": (
        "a body axum's `Json` extractor refuses (not JSON, wrong shape, wrong content type, over "
        "the payload limit) is answered in plain text, which the document does not describe"
    ),
    "routes outside the document": (
        "POST /, /invocations (the model type's route), /embeddings (as /v1/embeddings) and "
        "/vertex (its predictions are the routes' answers) are routed by server.rs but documented "
        "only under the routes they run"
    ),
}


def _convert(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: `nullable`, and closed objects."""
    if isinstance(node, list):
        return [_convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v) for k, v in node.items() if k not in ("nullable", "example")}
    if node.get("type") == "object" and "properties" in node:
        out.setdefault("additionalProperties", False)
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def document() -> dict[str, Any]:
    doc = json.loads(DOCUMENT.read_text())
    schemas = copy.deepcopy(doc["components"]["schemas"])
    error = schemas["OpenAICompatErrorResponse"]  # the code's field name, not the document's
    error["properties"]["type"] = error["properties"].pop("error_type")
    error["required"] = ["type" if r == "error_type" else r for r in error["required"]]
    doc["components"]["schemas"] = _convert(schemas)
    return doc


def schema(path: str, status: int, method: str = "post") -> dict[str, Any] | None:
    """The JSON Schema of `path`'s answer with `status`, or None where the document gives the
    answer no JSON body. KeyError: the document has no such answer."""
    doc = document()
    response = doc["paths"][path][method]["responses"][str(status)]
    content = response.get("content", {}).get("application/json")
    if content is None:
        return None
    return {"components": doc["components"], **content["schema"]}


def validate(path: str, status: int, body: Any, method: str = "post") -> None:
    """Raise jsonschema.ValidationError unless `body` is what the document says `path` answers."""
    s = schema(path, status, method)
    assert s is not None, f"the document gives {method.upper()} {path} {status} no JSON body"
    jsonschema.Draft202012Validator(s).validate(body)


def validate_definition(name: str, body: Any) -> None:
    """Validate `body` against one of the document's component schemas."""
    s = {"components": document()["components"], "$ref": f"#/components/schemas/{name}"}
    jsonschema.Draft202012Validator(s).validate(body)
