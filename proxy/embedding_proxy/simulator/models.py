"""One model type at a time, as TEI serves one model: what `/info` says of it, which route answers
`POST /` and `/invocations`, and the 424 `Backend` errors of the routes the model cannot serve.

From text-embeddings-inference: `ModelType` and `ClassifierModel` (router/src/lib.rs: a classifier
with one label is a re-ranker), the checks in core/src/infer.rs (`embed_all`, `embed_sparse`,
`embed_pooled`, `embed`, `predict`) and router/src/http/server.rs (`rerank`, the default routes).
"""

from __future__ import annotations

from typing import Any

from .errors import TeiError, backend

EMBEDDING, CLASSIFIER, RERANKER, SPLADE = "embedding", "classifier", "reranker", "splade"
LABELS = {CLASSIFIER: ("LABEL_0", "LABEL_1"), RERANKER: ("LABEL_0",)}
# What `POST /` and `POST /invocations` run (TEI's `TASK=sentence-similarity` is not modelled).
DEFAULT_ROUTE = {
    EMBEDDING: "/embed",
    SPLADE: "/embed_sparse",
    CLASSIFIER: "/predict",
    RERANKER: "/rerank",
}


def is_classifier(model_type: str) -> bool:
    """TEI's backend runs re-rankers as classifiers (`Infer::is_classifier`)."""
    return model_type in LABELS


def info(model_type: str, pooling: str) -> dict[str, Any]:
    """`/info`'s `model_type`: `{"embedding": {"pooling"}}` or `{"classifier"|"reranker":
    {"id2label", "label2id"}}`."""
    if model_type == SPLADE:
        return {EMBEDDING: {"pooling": "splade"}}
    if model_type == EMBEDDING:
        return {EMBEDDING: {"pooling": pooling}}
    labels = LABELS[model_type]
    return {
        model_type: {
            "id2label": {str(i): label for i, label in enumerate(labels)},
            "label2id": {label: i for i, label in enumerate(labels)},
        }
    }


def pooled_error(model_type: str, normalize: bool) -> TeiError | None:
    """`Infer::embed_pooled`, before anything else: a SPLADE vector cannot be normalised."""
    if model_type == SPLADE and normalize:
        return backend("`normalize` is not available for SPLADE models")
    return None


def all_error(model_type: str) -> TeiError | None:
    """`Infer::embed_all`: no token vectors from a SPLADE model."""
    if model_type == SPLADE:
        return backend("`embed_all` is not available for SPLADE models")
    return None


def sparse_error(model_type: str) -> TeiError | None:
    """`Infer::embed_sparse`."""
    if model_type != SPLADE:
        return backend("Model is not an embedding model with SPLADE pooling")
    return None


def embed_error(model_type: str) -> TeiError | None:
    """`Infer::embed`, under every embedding route: not from a classifier or re-ranker."""
    if is_classifier(model_type):
        return backend("Model is not an embedding model")
    return None


def predict_error(model_type: str) -> TeiError | None:
    """`Infer::predict`: a classifier or a re-ranker."""
    if not is_classifier(model_type):
        return backend("Model is not a classifier model")
    return None


def rerank_error(model_type: str) -> TeiError | None:
    """The `rerank` handler, before the batch-size check: a re-ranker only."""
    if model_type != RERANKER:
        return backend("model is not a re-ranker model")
    return None
