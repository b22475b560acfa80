"""How many of TEI's permits a request takes (`max_concurrent_requests`, one per input; router/
src/http/server.rs): its inference routes take one for each input, `/similarity` one more for its
source sentence, a rerank one per text; `/tokenize` and `/decode` take none. For requests the
proxy forwards, read from the body as TEI will read it; a body TEI cannot read takes none (TEI
refuses it before taking any). Pure."""

from __future__ import annotations

from typing import Any

import orjson

# TEI's routes that take permits (with `/` and `/invocations`, whatever the model type serves).
TAKE_PERMITS = frozenset(
    {
        "/",
        "/invocations",
        "/embed",
        "/embed_sparse",
        "/embed_all",
        "/predict",
        "/rerank",
        "/similarity",
        "/v1/embeddings",
        "/embeddings",
        "/vertex",
    }
)


def permits(path: str, body: bytes) -> int:
    """The permits a POST of `body` to `path` takes in TEI."""
    if path not in TAKE_PERMITS:
        return 0
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 0
    if not isinstance(data, dict):
        return 0
    instances = data.get("instances")
    if path == "/vertex" and isinstance(instances, list):
        return sum(_inputs(i) for i in instances if isinstance(i, dict))
    return _inputs(data)


def _inputs(data: dict[str, Any]) -> int:
    texts = data.get("texts")
    if isinstance(texts, list):  # a rerank: one per text
        return len(texts)
    inputs = data.get("inputs", data.get("input"))
    if isinstance(inputs, dict):  # a similarity: the sentences and their source
        sentences = inputs.get("sentences")
        return len(sentences) + 1 if isinstance(sentences, list) else 0
    if isinstance(inputs, list):
        # A list of inputs; one list of token ids (or a /predict pair) is one input.
        return 1 if inputs and not isinstance(inputs[0], str | list) else len(inputs)
    return 1 if isinstance(inputs, str) else 0
