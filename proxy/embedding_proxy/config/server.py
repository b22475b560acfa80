"""The server's settings (the `server` section): listening, workers, and what one peer may make
the proxy hold, for how long (docs/security.md). They apply at start; a reload changes none."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

MAX_WORKERS = 1024

# An origin as a header carries it (scheme://host[:port], or *): printable ASCII but the comma.
Origin = Annotated[str, StringConstraints(pattern=r"^[\x21-\x2b\x2d-\x7e]+$")]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(Section):
    host: str = Field("0.0.0.0", description="Listen address of both ports.")
    port: int = Field(8000, ge=1, le=65535, description="API port (TEI and OpenAI routes).")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve /metrics here only; unset: on the API port."
    )
    workers: int | Literal["auto"] = Field(
        "auto",
        description="Worker processes sharing the ports; auto: the container's CPU limit.",
    )
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Larger bodies get 413.")
    max_head_bytes: int = Field(
        65_536,
        ge=1024,
        le=1_048_576,
        description="Request line and headers, each header counted with 64 bytes more; 431.",
    )
    max_header_count: int = Field(100, ge=8, le=10_000, description="More headers get 431.")
    head_timeout_seconds: float = Field(
        10.0, gt=0, le=3600, description="A request head must arrive within this; else 408."
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="A body must arrive within this after its head; 408."
    )
    keepalive_seconds: float = Field(
        75.0, gt=0, le=3600, description="A connection idle this long between requests is closed."
    )
    send_timeout_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="A client that reads none of its answer this long: dropped.",
    )
    max_connections: int = Field(
        4096,
        ge=1,
        le=1_000_000,
        description="At the cap the longest-idle keep-alive connection is closed; else 503.",
    )
    max_body_buffer_bytes: int = Field(
        268_435_456,
        ge=1024,
        description="Request bodies held across all connections; beyond, reading waits.",
    )
    max_answer_buffer_bytes: int = Field(
        268_435_456,
        ge=1024,
        description="Answers held for clients slow to take them, all connections; beyond, the "
        "slowest is dropped.",
    )
    drain_seconds: float = Field(
        0.0, ge=0, le=300, description="After SIGTERM, keep serving this long before refusing."
    )
    grace_seconds: float = Field(
        25.0, ge=0, le=3600, description="After draining, wait this long for queued work."
    )
    request_timeout_ms: int = Field(
        30_000, ge=1, description="Default deadline of a request, queue time included."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log level written."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text: one readable line a record; json: one JSON object a line."
    )
    access_log: bool = Field(
        False, description="Log every API request (method, route, status, inputs, timings, id)."
    )
    cors_allow_origin: list[Origin] | None = Field(
        None, description="Origins browsers may call from (CORS; TEI's flag); unset or *: any."
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> object:
        text = str(value).strip()
        if text == "auto":
            return "auto"
        if isinstance(value, bool) or not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
            raise ValueError(f"must be auto or a whole number from 1 to {MAX_WORKERS}")
        return int(text)
