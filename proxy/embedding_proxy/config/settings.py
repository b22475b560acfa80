"""The proxy's settings: one pydantic model, read from defaults < file < environment < flags.

The file is what the operator writes into a ConfigMap; its layout is the model's layout.
Environment variables use the `EMBEDDING_PROXY_` prefix and `__` between nested fields,
e.g. `EMBEDDING_PROXY_BATCHING__MAX_BATCH_SIZE=64`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .lanes import (
    MAX_SHARES,
    LaneConfig,
    default_lanes,
    key_line,
    lane_of,
    names,
)
from .redaction import redact
from .server import Section, ServerConfig
from .sources import ENV_PREFIX, ConfigError, from_env, merge, read_file


class RetryConfig(Section):
    max_attempts: int = Field(
        3, ge=1, le=10, description="Tries per upstream call, first included."
    )
    backoff_ms: int = Field(50, ge=0, description="First backoff; doubles each retry, with jitter.")
    max_backoff_ms: int = Field(2_000, ge=0, description="Longest backoff.")
    budget_ratio: float = Field(
        0.2, ge=0, le=10, description="Retries allowed as a share of recent upstream calls."
    )


class UpstreamConfig(Section):
    url: str = Field("http://127.0.0.1:80", description="Base URL of TEI.")
    timeout_ms: int = Field(60_000, ge=1, description="Upper bound on one upstream call.")
    connect_timeout_ms: int = Field(2_000, ge=1, description="Connect timeout.")
    max_connections: int = Field(
        64, ge=1, le=4096, description="Pooled keep-alive connections to TEI."
    )
    api_key_file: Path | None = Field(None, description="Bearer key TEI requires, from a file.")
    info_refresh_seconds: float = Field(
        30.0, ge=1, description="How often /info (limits, model id) is read again."
    )
    max_answer_bytes: int = Field(
        100_000_000, ge=1024, description="Larger upstream answer bodies are refused with 502."
    )
    max_answer_buffer_bytes: int = Field(
        268_435_456,
        ge=1024,
        description="Batch answer bodies held from TEI at once; beyond, reading them waits.",
    )
    retry: RetryConfig = RetryConfig()

    @field_validator("url")
    @classmethod
    def _url_is_usable(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises for a port that is not a number in 0-65535
        except ValueError:
            # Not the parser's words: they quote what it took for a port, which may be a
            # password's first characters (`user:pa#ss@host`).
            raise ValueError(
                "not a valid URL (a password's `#`, `/`, `?` or `@` must be percent-encoded)"
            ) from None
        if not parts.hostname:
            raise ValueError("no host")
        if parts.query or parts.fragment or url.endswith(("?", "#")):
            # Never sent as such; a key belongs in upstream.api_key_file.
            raise ValueError("a query or fragment is not allowed (a key: upstream.api_key_file)")
        return url


class BatchingConfig(Section):
    """Reloaded live: a new file changes these without a restart."""

    max_batch_size: int = Field(
        32, ge=1, le=4096, description="Inputs per upstream call (capped by TEI's limit)."
    )
    max_batch_tokens: int = Field(
        16_384,
        ge=1,
        description="Token budget per call, estimated as characters/4 (capped by TEI's).",
    )
    max_wait_ms: float = Field(
        5.0, ge=0, le=10_000, description="Longest an input waits for its batch to fill."
    )
    max_concurrency: int | Literal["auto"] = Field(
        "auto",
        description="Upstream calls at once; auto: found while running (concurrency_limit.py).",
    )
    max_concurrency_limit: int = Field(
        32, ge=1, le=1024, description="Most upstream calls at once under auto (and TEI's permits)."
    )
    queue_capacity: int = Field(4096, ge=1, description="Inputs waiting at most; beyond that, 429.")
    flush_mode: Literal["adaptive", "deadline"] = Field(
        "adaptive",
        description="adaptive: send at once while a slot is free; deadline: wait max_wait_ms.",
    )
    idle_group_seconds: float = Field(
        60.0, ge=0.1, description="A parameter group idle this long is dropped."
    )
    max_groups: int = Field(
        256,
        ge=1,
        description="Parameter groups held at once; idle ones make room, else 429.",
    )
    lanes: list[LaneConfig] | None = Field(
        None,
        description="Priority lanes, highest first (flag: name:capacity:min_share[:weight],...); "
        "unset: interactive, then batch.",
    )
    default_lane: str = Field(
        "interactive",
        description="Lane of a request that names none (unset and no lane of that name: the "
        "first lane).",
    )
    signal_lanes: list[str] = Field(
        default_factory=list,
        description="Lanes counted in queue_depth_avg (the autoscaling signal); none: all.",
    )

    @field_validator("lanes", mode="before")
    @classmethod
    def _compact_lanes(cls, value: Any) -> Any:
        value = names(value)
        if isinstance(value, list):
            return [lane_of(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("signal_lanes", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return names(value)

    @model_validator(mode="after")
    def _lanes_agree(self) -> BatchingConfig:
        names = [lane.name for lane in self.lane_list]
        if len(set(names)) != len(names):
            raise ValueError(f"lanes: names must be unique, got {names}")
        if sum(lane.min_share for lane in self.lane_list) > MAX_SHARES + 1e-9:
            raise ValueError(f"lanes: min_share values add up to more than {MAX_SHARES}")
        if "default_lane" in self.model_fields_set and self.default_lane not in names:
            raise ValueError(f"default_lane {self.default_lane!r} is not one of the lanes {names}")
        unknown = [n for n in self.signal_lanes if n not in names]
        if unknown:
            raise ValueError(f"signal_lanes {unknown} are not among the lanes {names}")
        return self

    @property
    def lane_default(self) -> str:
        """default_lane; left unset with no lane of that name: the first lane."""
        names = [lane.name for lane in self.lane_list]
        return self.default_lane if self.default_lane in names else names[0]

    @property
    def lane_list(self) -> list[LaneConfig]:
        """The lanes, highest first: the configured ones, or interactive then batch."""
        if self.lanes:
            return self.lanes
        return default_lanes(self.queue_capacity)

    @field_validator("max_concurrency", mode="before")
    @classmethod
    def _concurrency(cls, value: Any) -> Any:
        # "auto", or a number of calls (flags and environment give strings).
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if value == "auto" or (type(value) is int and 1 <= value <= 1024):
            return value
        raise ValueError("must be auto or a number of calls from 1 to 1024")


class AuthConfig(Section):
    api_keys: list[str] = Field(
        default_factory=list,
        repr=False,
        description="Client API keys (comma-separated), each `KEY [lane=NAME] [weight=N]`; "
        "any key turns auth on.",
    )
    api_keys_file: Path | None = Field(
        None, description="One key a line, as in api_keys; reloaded on change."
    )

    @field_validator("api_keys")
    @classmethod
    def _keys_parse(cls, keys: list[str]) -> list[str]:
        for line in keys:
            try:
                key_line(line)
            except ValueError as e:
                raise ValueError(str(e)) from None  # the message never quotes the key
        return keys


class LimitsConfig(Section):
    max_inputs_per_request: int = Field(
        1024, ge=1, description="Inputs in one client request; beyond that, 413."
    )
    max_input_chars: int = Field(
        100_000, ge=1, description="Characters in one input; beyond that, 413."
    )
    max_answer_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Bytes of one request's answer (its inputs' results as TEI sent them); 413.",
    )
    max_answers_held_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="Results held for all requests waiting for the rest of theirs; beyond, 503.",
    )
    rate_per_second: float = Field(0, ge=0, description="Requests per second per key; 0: off.")
    rate_burst: int = Field(0, ge=0, description="Bucket size; 0: same as rate_per_second.")


class Config(Section):
    version: str = Field("", description="Label of this config, exported as a metric.")
    server: ServerConfig = ServerConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    batching: BatchingConfig = BatchingConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()

    @model_validator(mode="after")
    def _key_lanes_exist(self) -> Config:
        names = {lane.name for lane in self.batching.lane_list}
        for line in self.auth.api_keys:
            lane = key_line(line)[1]
            if lane is not None and lane not in names:
                raise ValueError(f"auth.api_keys: lane {lane!r} is not one of {sorted(names)}")
        return self


def describe(error: ValidationError) -> str:
    """One line naming the first bad setting, e.g. `batching.max_batch_size: ...`."""
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown setting"
    if isinstance(first.get("input"), dict) or "api_keys" in where:
        # A whole section is too long to quote, and keys are secrets.
        return redact(f"{where}: {first['msg']}")
    return redact(f"{where}: {first['msg']} (got {first.get('input')!r})")


def validate(data: Mapping[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe(e)) from e


def load(
    path: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Defaults < file < environment < flags."""
    environ = os.environ if environ is None else environ
    path = path or env_config_path(environ)
    data: dict[str, Any] = read_file(path) if path else {}
    data = merge(data, from_env(environ))
    data = merge(data, flags or {})
    return validate(data)


def env_config_path(environ: Mapping[str, str] | None = None) -> Path | None:
    value = (os.environ if environ is None else environ).get(ENV_PREFIX + "CONFIG")
    return Path(value) if value else None
