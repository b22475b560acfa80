"""The EmbeddingProxy spec as the operator reads it: defaults and cross-field rules.

The CRD carries the same defaults and rules (the API server applies them), and a unit test keeps
the two equal. They are repeated here because an object can reach the operator without them: a CR
stored before a CRD upgrade added a field, or an API server that does not apply defaults."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from . import names, sidecar_rules
from .quantity import Quantity

MAX_INT32 = 2**31 - 1


# upstream.url: the CRD's CEL rules use these very patterns (a unit test compares them), so that
# the API server and the operator refuse the same URLs. They read the same in Python and in RE2;
# the CRD quotes them as CEL raw strings (r'...').
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = f"{_OCTET}([.]{_OCTET}){{3}}"
# A DNS name whose last label begins with a letter (so `127.1` or `2130706433` are not names).
_LABEL = "[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_DNS = f"({_LABEL}[.])*[A-Za-z]([-A-Za-z0-9]{{0,61}}[A-Za-z0-9])?[.]?"
_IPV6 = r"\[[0-9A-Fa-f:.]+\]"
_PORT = (
    "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9][0-9]|6[0-4][0-9][0-9][0-9]"
    "|[1-5][0-9][0-9][0-9][0-9]|[1-9][0-9]?[0-9]?[0-9]?)"
)
# http or https, a host, an optional port 1-65535 without leading zeros, an optional path; no
# user, query or fragment.
URL_PATTERN = f"^https?://({_IPV4}|{_DNS}|{_IPV6})(:{_PORT})?(/[-A-Za-z0-9._~!$&()*+,;=:@%/]*)?$"
# A URL whose host is the pod itself, in any case: the loopback names of the pod's /etc/hosts
# (with or without the root dot), 127.0.0.0/8, 0.0.0.0, and IPv6 ::1, :: and IPv4-mapped 127.x
# or 0.0.0.0, in any spelling. (On the URL, not the host: CEL's cost estimate cannot bound what
# url().getHostname() returns.)
LOCAL_URL_PATTERN = (
    "(?i)^https?://((localhost|ip6-localhost|ip6-loopback)[.]?|127[.][0-9.]+|0[.]0[.]0[.]0"
    r"|\[[0:]*(:0*1|:ffff:(127[.][0-9.]+|0[.]0[.]0[.]0|7f[0-9a-f][0-9a-f]:[0-9a-f]+|0+:0+))?\])"
    "(:|/|$)"
)
URL_MESSAGE = (
    "upstream.url must be http(s)://host[:port][/path]: a DNS name, an IPv4 address or an [IPv6] "
    "address, a port 1-65535, no user, query or fragment"
)


def url_port(url: str) -> int:
    """The port of a URL that matches URL_PATTERN, its scheme's default when none is given."""
    netloc = urlsplit(url).netloc
    tail = netloc.rsplit("]", 1)[-1]
    if ":" in tail:
        return int(tail.rsplit(":", 1)[1])
    return 443 if url.startswith("https:") else 80


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


class CamelModel(Model):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, alias_generator=_camel
    )


# Object names (DNS-1123 subdomain) and Secret data keys, as the CRD patterns them: a name is
# pasted into API paths, so nothing else (no `/`, no `..`) may reach the operator.
OBJECT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=OBJECT_NAME)]


def target_name(spec: Mapping[str, Any] | None) -> str:
    """spec.targetRef.name when it is an object name, else "" (an object the CRD of an older
    release let in must still be deletable: its target was never touched)."""
    name = ((spec or {}).get("targetRef") or {}).get("name")
    ok = isinstance(name, str) and len(name) <= 253 and re.fullmatch(OBJECT_NAME, name)
    return name if ok else ""


class TargetRef(CamelModel):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    name: ObjectName


class Upstream(CamelModel):
    url: str = "http://127.0.0.1:80"
    timeout_milliseconds: int = Field(60_000, ge=1)
    connect_timeout_milliseconds: int = Field(2_000, ge=1)
    max_connections: int = Field(64, ge=1, le=4096)

    @model_validator(mode="after")
    def _url(self) -> Upstream:
        if len(self.url) > 2048 or not re.fullmatch(URL_PATTERN, self.url):
            raise ValueError(f"{URL_MESSAGE}, got {self.url[:200]!r}")
        return self

    @property
    def port(self) -> int:
        return url_port(self.url)

    @property
    def is_local(self) -> bool:
        """The upstream is in the same pod (so its port shares the pod's network namespace)."""
        return re.match(LOCAL_URL_PATTERN, self.url) is not None


class Ports(CamelModel):
    api: int = Field(8000, ge=1, le=65535)
    metrics: int = Field(9464, ge=1, le=65535)

    @model_validator(mode="after")
    def _distinct(self) -> Ports:
        if self.api == self.metrics:
            raise ValueError("sidecar.ports.api and sidecar.ports.metrics must differ")
        return self


def default_resources() -> dict[str, dict[str, Quantity]]:
    return {
        "requests": {"cpu": "500m", "memory": "256Mi"},
        # 6Gi: above the proxy's worst case at its limits (docs/security.md, "Memory").
        "limits": {"cpu": "2", "memory": "6Gi"},
    }


class Sidecar(CamelModel):
    # What pod validation would refuse is refused here (sidecar_rules.py).
    # Absent from the stored object (the CRD has no default): `parse` fills the operator's own.
    image: Annotated[str, AfterValidator(sidecar_rules.checked_image)] = Field(
        names.DEFAULT_SIDECAR_IMAGE, min_length=1
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    mode: Literal["Native", "Container"] = "Native"
    ports: Ports = Ports()
    resources: Annotated[
        dict[str, dict[str, Quantity]], AfterValidator(sidecar_rules.checked_resources)
    ] = Field(default_factory=default_resources)
    # Proxy processes; unset: the CPU limit in `resources`, rounded up (cpu_limit.py).
    workers: int | None = Field(None, ge=1, le=1024)
    drain_seconds: int = Field(5, ge=0, le=300)
    grace_seconds: int = Field(20, ge=0, le=3600)
    request_timeout_milliseconds: int = Field(30_000, ge=1)
    max_body_bytes: int = Field(2_000_000, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


# Priority lanes (docs/operator.md, "Priority lanes"). The CRD's CEL rules say the same, with the
# same messages; the bound on the number of lanes keeps those rules within CEL's cost budget.
LANE_PATTERN = "^[a-z][a-z0-9-]{0,30}$"
MAX_LANES = 8
MAX_MIN_SHARE_SUM = 0.9
# Shares are fractions in binary floating point: 0.1 + 0.2 + 0.6 adds up to 0.9000000000000001.
MIN_SHARE_SLACK = 1e-9
LANES_UNIQUE = "batching.lanes must have unique names"
DEFAULT_LANE_UNKNOWN = "batching.defaultLane must name one of batching.lanes"
MIN_SHARE_SUM = "the minShare of all batching.lanes must add up to at most 0.9"
SIGNAL_LANE_UNKNOWN = "autoscaling.lanes must name lanes of batching.lanes"
SIGNAL_LANES_REPEATED = "autoscaling.lanes must not name a lane twice"


class Lane(CamelModel):
    name: str = Field(pattern=LANE_PATTERN)
    queue_capacity: int = Field(4096, ge=1)
    # The least part of each batch the lane gets while it has work queued.
    min_share: float = Field(0.1, ge=0, le=MAX_MIN_SHARE_SUM, allow_inf_nan=False)
    weight: int | None = Field(None, ge=1, le=1000)


class Batching(CamelModel):
    max_batch_size: int = Field(32, ge=1, le=4096)
    max_batch_tokens: int = Field(16_384, ge=1)
    max_wait_milliseconds: int = Field(5, ge=0, le=10_000)
    # A number of calls, or "auto": the proxy finds it (the default, as in the CRD).
    max_concurrency: int | Literal["auto"] = "auto"
    max_concurrency_limit: int = Field(32, ge=1, le=1024)
    queue_capacity: int = Field(4096, ge=1)
    flush_mode: Literal["adaptive", "deadline"] = "adaptive"
    # Highest priority first; None: one queue for everything, as without lanes.
    lanes: tuple[Lane, ...] | None = Field(None, max_length=MAX_LANES)
    default_lane: str | None = None

    @model_validator(mode="after")
    def _lanes(self) -> Batching:
        lanes = self.lanes or ()
        names = [lane.name for lane in lanes]
        if len(set(names)) != len(names):
            raise ValueError(LANES_UNIQUE)
        if self.default_lane is not None and self.default_lane not in names:
            raise ValueError(DEFAULT_LANE_UNKNOWN)
        if sum(lane.min_share for lane in lanes) > MAX_MIN_SHARE_SUM + MIN_SHARE_SLACK:
            raise ValueError(MIN_SHARE_SUM)
        return self

    @property
    def lane_names(self) -> tuple[str, ...]:
        return tuple(lane.name for lane in self.lanes or ())

    @field_validator("max_concurrency", mode="before")
    @classmethod
    def _concurrency(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and 1 <= value <= 1024):
            return value
        raise ValueError("must be auto or a number of calls from 1 to 1024")


class Limits(CamelModel):
    max_inputs_per_request: int = Field(1024, ge=1)
    max_input_chars: int = Field(100_000, ge=1)
    requests_per_second: int = Field(0, ge=0)
    burst: int = Field(0, ge=0)


class SecretKeyRef(CamelModel):
    name: ObjectName
    key: str = Field(min_length=1, max_length=253, pattern=SECRET_KEY)


class ApiKeysRef(SecretKeyRef):
    key: str = Field("api-keys", min_length=1, max_length=253, pattern=SECRET_KEY)


class UpstreamKeyRef(SecretKeyRef):
    key: str = Field("api-key", min_length=1, max_length=253, pattern=SECRET_KEY)


class Auth(CamelModel):
    api_keys_secret_ref: ApiKeysRef | None = None
    upstream_api_key_secret_ref: UpstreamKeyRef | None = None


class ScalingPolicy(CamelModel):
    type: Literal["Pods", "Percent"]
    value: int = Field(ge=1)
    period_seconds: int = Field(ge=1, le=1800)


class ScalingRules(CamelModel):
    stabilization_window_seconds: int = Field(ge=0, le=3600)
    select_policy: Literal["Max", "Min", "Disabled"] = "Max"
    policies: tuple[ScalingPolicy, ...] = ()


def _scale_up() -> ScalingRules:
    # HPA's defaults: at once, doubling or +4 pods per 15 s, whichever is more.
    return ScalingRules(
        stabilization_window_seconds=0,
        policies=(
            ScalingPolicy(type="Percent", value=100, period_seconds=15),
            ScalingPolicy(type="Pods", value=4, period_seconds=15),
        ),
    )


def _scale_down() -> ScalingRules:
    # HPA's defaults: the highest recommendation of the last 5 minutes, then all the way down.
    return ScalingRules(
        stabilization_window_seconds=300,
        policies=(ScalingPolicy(type="Percent", value=100, period_seconds=15),),
    )


class Behavior(CamelModel):
    scale_up: ScalingRules = Field(default_factory=_scale_up)
    scale_down: ScalingRules = Field(default_factory=_scale_down)


class ScaleTargetRef(CamelModel):
    api_version: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    name: ObjectName


DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"


class Keda(CamelModel):
    """What the ScaledObject written for `provider: KEDA` needs beyond the shared fields."""

    # The Prometheus that scrapes the proxies (prometheus-operator's default Service name).
    server_address: str = Field(DEFAULT_PROMETHEUS, min_length=1)

    @model_validator(mode="after")
    def _url(self) -> Keda:
        parts = urlsplit(self.server_address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "autoscaling.keda.serverAddress must be an http(s) URL with a host, "
                f"got {self.server_address!r}"
            )
        return self


class Autoscaling(CamelModel):
    enabled: bool = False
    provider: Literal["Builtin", "KEDA", "None"] = "Builtin"
    # int32, as a Deployment's replicas.
    min_replicas: int = Field(1, ge=0, le=MAX_INT32)
    max_replicas: int = Field(10, ge=1, le=MAX_INT32)
    target_queue_depth_per_pod: int = Field(64, ge=1)
    tolerance_percent: int = Field(10, ge=0, le=100)
    scale_target_ref: ScaleTargetRef | None = None
    poll_seconds: int = Field(5, ge=1, le=300)
    behavior: Behavior = Behavior()
    keda: Keda = Keda()
    # The lanes whose queues the scaling signal counts; None: all of them.
    lanes: tuple[Annotated[str, Field(pattern=LANE_PATTERN)], ...] | None = Field(
        None, max_length=MAX_LANES
    )

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
        if self.lanes and len(set(self.lanes)) != len(self.lanes):
            raise ValueError(SIGNAL_LANES_REPEATED)
        return self


Injection = Literal["Deployment", "Webhook"]


class ProxySpec(CamelModel):
    target_ref: TargetRef
    # None: the operator's default (`EMBEDDING_PROXY_OPERATOR_INJECTION`), so no CRD default.
    injection: Injection | None = None
    upstream: Upstream = Upstream()
    sidecar: Sidecar = Sidecar()
    batching: Batching = Batching()
    limits: Limits = Limits()
    auth: Auth = Auth()
    autoscaling: Autoscaling = Autoscaling()

    @model_validator(mode="after")
    def _upstream_is_not_self(self) -> ProxySpec:
        ports = self.sidecar.ports
        if self.upstream.is_local and self.upstream.port in (ports.api, ports.metrics):
            raise ValueError(
                f"upstream.url {self.upstream.url} points at the proxy's own port "
                f"{self.upstream.port}; TEI must listen on another one"
            )
        return self

    @model_validator(mode="after")
    def _signal_lanes(self) -> ProxySpec:
        if not set(self.autoscaling.lanes or ()) <= set(self.batching.lane_names):
            raise ValueError(SIGNAL_LANE_UNKNOWN)
        return self

    @property
    def scale_target_name(self) -> str:
        ref = self.autoscaling.scale_target_ref
        return ref.name if ref else self.target_ref.name


class SpecError(ValueError):
    """The spec breaks a rule; the message names the field in one line."""


def parse(spec: dict[str, Any]) -> ProxySpec:
    try:
        return ProxySpec.model_validate(dict(spec))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        raise SpecError(f"spec.{where}: {message}" if where != "spec" else message) from e
