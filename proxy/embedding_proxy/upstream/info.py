"""What TEI's `/info` says about itself, as far as the proxy needs it: its limits, the names it
answers OpenAI calls with, and its model type, which decides what `POST /` means."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class UpstreamInfo:
    model_id: str
    max_client_batch_size: int
    max_batch_tokens: int
    max_concurrent_requests: int
    max_input_length: int
    # TEI 1.9's `--served-model-name` (default: the model id), the `model` of its OpenAI answers;
    # TEI 1.8 has none, and the model id stands in.
    served_model_name: str = "unknown"
    # "embedding", "classifier" or "reranker" (TEI's `ModelType`); "" when /info does not say.
    model_type: str = ""
    pooling: str = ""  # an embedding model's pooling ("cls", "mean", "splade", ...)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> UpstreamInfo:
        def positive(name: str, default: int) -> int:
            value = data.get(name)
            return value if isinstance(value, int) and value > 0 else default

        model_id = str(data.get("model_id", "unknown"))
        served = data.get("served_model_name")
        kind = data.get("model_type")
        # Serialized as an externally tagged enum: {"embedding": {"pooling": "cls"}}.
        model_type, details = ("", None)
        if isinstance(kind, dict) and kind:
            model_type, details = next(iter(kind.items()))
        pooling = details.get("pooling") if isinstance(details, dict) else None
        return cls(
            model_id=model_id,
            max_client_batch_size=positive("max_client_batch_size", 32),
            max_batch_tokens=positive("max_batch_tokens", 16384),
            max_concurrent_requests=positive("max_concurrent_requests", 512),
            max_input_length=positive("max_input_length", 512),
            served_model_name=served if isinstance(served, str) and served else model_id,
            model_type=model_type if isinstance(model_type, str) else "",
            pooling=pooling if isinstance(pooling, str) else "",
        )

    @property
    def root_route(self) -> str | None:
        """The route TEI serves `POST /` and `POST /invocations` with, when the proxy batches it
        (router/src/http/server.rs, `run`: by model type); None: a reranker (its `/rerank` is
        forwarded) or a type /info does not name."""
        if self.model_type == "embedding":
            return "/embed_sparse" if self.pooling == "splade" else "/embed"
        if self.model_type == "classifier":
            return "/predict"
        return None
