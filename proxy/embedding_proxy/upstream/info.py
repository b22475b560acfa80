"""What TEI's `/info` says about itself, as far as the proxy needs it: pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class UpstreamInfo:
    """What TEI's /info says about itself, as far as the proxy needs it."""

    model_id: str
    max_client_batch_size: int
    max_batch_tokens: int
    max_concurrent_requests: int
    max_input_length: int

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> UpstreamInfo:
        def positive(name: str, default: int) -> int:
            value = data.get(name)
            return value if isinstance(value, int) and value > 0 else default

        return cls(
            model_id=str(data.get("model_id", "unknown")),
            max_client_batch_size=positive("max_client_batch_size", 32),
            max_batch_tokens=positive("max_batch_tokens", 16384),
            max_concurrent_requests=positive("max_concurrent_requests", 512),
            max_input_length=positive("max_input_length", 512),
        )
