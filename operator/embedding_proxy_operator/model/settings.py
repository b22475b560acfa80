"""The operator's own settings, from the environment (the chart sets them on its Deployment)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from . import images, names, sidecar_rules

PREFIX = "EMBEDDING_PROXY_OPERATOR_"


# client-go's JitterFactor: the wait between attempts is retry_seconds * [1, 1.2).
LEASE_JITTER = 1.2


@dataclass(frozen=True)
class LeaseTiming:
    """Leader election's clock, as controller-runtime's (its defaults: 15 s / 10 s / 2 s): the
    Lease lasts `lease_seconds` past its last renewal seen, the holder renews every
    `retry_seconds`, and stops acting when it has not renewed for `renew_deadline_seconds`."""

    lease_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_seconds: float = 2.0

    def __post_init__(self) -> None:
        # client-go refuses the same.
        if self.retry_seconds <= 0:
            raise ValueError(f"{PREFIX}LEASE_RETRY_SECONDS: the retry period must be above 0")
        if self.lease_seconds <= self.renew_deadline_seconds:
            raise ValueError(
                f"{PREFIX}LEASE_SECONDS ({self.lease_seconds:g}) must be longer than the renew "
                f"deadline, {PREFIX}LEASE_RENEW_DEADLINE_SECONDS ({self.renew_deadline_seconds:g})"
            )
        if self.renew_deadline_seconds <= LEASE_JITTER * self.retry_seconds:
            raise ValueError(
                f"{PREFIX}LEASE_RENEW_DEADLINE_SECONDS ({self.renew_deadline_seconds:g}) must be "
                f"longer than {LEASE_JITTER} x the retry period, {PREFIX}LEASE_RETRY_SECONDS "
                f"({self.retry_seconds:g})"
            )


@dataclass(frozen=True)
class Options:
    # How often ready pods are asked which config they run when autoscaling is off.
    status_seconds: float = 15.0
    # Server-side timeout of watch requests: watches are re-opened this often, so that a silently
    # broken connection cannot stall the operator.
    watch_seconds: int = 300
    api_timeout_seconds: float = 10.0
    scrape_timeout_seconds: float = 2.0
    # Longest /metrics page read from a pod; a longer one counts as a failed scrape.
    scrape_max_bytes: int = 1 << 20
    # Longest delay between retries of a failed reconciliation, and between kopf's retries of
    # an API request (its watches too): a change made during an API outage waits at most this
    # long once the server is back.
    max_retry_seconds: float = 5.0
    native_sidecars: Literal["auto", "true", "false"] = "auto"
    # Port of the operator's own /metrics; 0: not served.
    metrics_port: int = 0
    # Sidecar images an EmbeddingProxy may name (entries of `images.parse_entry`); empty: any
    # image, which lets whoever writes an EmbeddingProxy run any image in the Deployments it
    # targets.
    allowed_images: tuple[str, ...] = ()
    # The sidecar image of EmbeddingProxies that name none.
    sidecar_image: str = names.DEFAULT_SIDECAR_IMAGE
    # How EmbeddingProxies without `spec.injection` inject the sidecar.
    injection: Literal["Deployment", "Webhook"] = "Deployment"
    # The admission webhook (docs/operator.md, "Injection modes"): the port its HTTPS server
    # listens on (0: no webhook, Webhook mode then cannot inject), the MutatingWebhookConfiguration
    # it keeps (the chart creates it), and how the API server reaches it: the operator's Service
    # (`name.namespace`) or, where there is none (tests), a URL.
    webhook_port: int = 0
    webhook_configuration: str = "embedding-proxy"
    webhook_service: str = ""
    webhook_url: str = ""
    webhook_failure_policy: Literal["Ignore", "Fail"] = "Ignore"
    # Namespaces whose pods the webhook sees (empty: all but the system's and its own).
    webhook_namespaces: tuple[str, ...] = ()
    # Labels a namespace must carry besides (e.g. {"embeddingproxy.io/webhook": "enabled"}), to
    # narrow the webhook further: what failurePolicy Fail should have.
    webhook_namespace_labels: tuple[tuple[str, str], ...] = ()
    # Life of the webhook's generated certificate; a new one is made after two thirds of it.
    webhook_cert_seconds: float = 30 * 86400.0
    # Leader election: the Lease the replicas share (its namespace empty: the pod's own, from
    # POD_NAMESPACE), and its clock.
    lease_name: str = "embedding-proxy-operator"
    lease_namespace: str = ""
    lease: LeaseTiming = LeaseTiming()

    def __post_init__(self) -> None:
        if self.webhook_port and not (self.webhook_url or "." in self.webhook_service):
            raise ValueError(
                f"{PREFIX}WEBHOOK_PORT is set, but neither {PREFIX}WEBHOOK_SERVICE (name.namespace)"
                f" nor {PREFIX}WEBHOOK_URL says how the API server reaches the webhook"
            )
        if self.webhook_url and not self.webhook_url.startswith("https://"):
            raise ValueError(f"{PREFIX}WEBHOOK_URL must be https://..., got {self.webhook_url!r}")
        _checked_images(self.allowed_images)
        problem = sidecar_rules.image_problem(self.sidecar_image)
        if problem is not None:
            raise ValueError(f"{PREFIX}SIDECAR_IMAGE: {problem}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Options:
        def number(key: str, default: float) -> float:
            raw = environ.get(PREFIX + key)
            if raw is None or raw == "":
                return default
            value = float(raw)
            if value <= 0:
                raise ValueError(f"{PREFIX}{key} must be positive, got {raw!r}")
            return value

        native = environ.get(PREFIX + "NATIVE_SIDECARS", "auto").lower()
        if native not in ("auto", "true", "false"):
            raise ValueError(f"{PREFIX}NATIVE_SIDECARS must be auto, true or false, got {native!r}")
        raw_port = environ.get(PREFIX + "METRICS_PORT") or "0"
        if not raw_port.isdigit() or int(raw_port) > 65535:
            raise ValueError(f"{PREFIX}METRICS_PORT must be a port number or 0, got {raw_port!r}")
        return cls(
            status_seconds=number("STATUS_SECONDS", cls.status_seconds),
            watch_seconds=int(number("WATCH_SECONDS", cls.watch_seconds)),
            api_timeout_seconds=number("API_TIMEOUT_SECONDS", cls.api_timeout_seconds),
            scrape_timeout_seconds=number("SCRAPE_TIMEOUT_SECONDS", cls.scrape_timeout_seconds),
            max_retry_seconds=number("MAX_RETRY_SECONDS", cls.max_retry_seconds),
            scrape_max_bytes=int(number("SCRAPE_MAX_BYTES", cls.scrape_max_bytes)),
            native_sidecars=native,  # type: ignore[arg-type]
            metrics_port=int(raw_port),
            allowed_images=allowed_images(environ.get(PREFIX + "ALLOWED_IMAGES", "")),
            sidecar_image=environ.get(PREFIX + "SIDECAR_IMAGE") or cls.sidecar_image,
            injection=_choice(environ, "INJECTION", ("Deployment", "Webhook"), "Deployment"),
            webhook_port=_port(environ, "WEBHOOK_PORT"),
            webhook_configuration=environ.get(PREFIX + "WEBHOOK_CONFIGURATION")
            or cls.webhook_configuration,
            webhook_service=environ.get(PREFIX + "WEBHOOK_SERVICE", ""),
            webhook_url=environ.get(PREFIX + "WEBHOOK_URL", ""),
            webhook_failure_policy=_choice(
                environ, "WEBHOOK_FAILURE_POLICY", ("Ignore", "Fail"), "Ignore"
            ),
            webhook_namespaces=tuple(
                n for n in environ.get(PREFIX + "WEBHOOK_NAMESPACES", "").replace(",", " ").split()
            ),
            webhook_namespace_labels=_labels(environ, "WEBHOOK_NAMESPACE_LABELS"),
            webhook_cert_seconds=number("WEBHOOK_CERT_SECONDS", cls.webhook_cert_seconds),
            lease_name=environ.get(PREFIX + "LEASE_NAME") or cls.lease_name,
            lease_namespace=environ.get(PREFIX + "LEASE_NAMESPACE", ""),
            lease=LeaseTiming(
                number("LEASE_SECONDS", cls.lease.lease_seconds),
                number("LEASE_RENEW_DEADLINE_SECONDS", cls.lease.renew_deadline_seconds),
                number("LEASE_RETRY_SECONDS", cls.lease.retry_seconds),
            ),
        )


def _choice(environ: Mapping[str, str], key: str, allowed: tuple[str, ...], default: str) -> Any:
    raw = environ.get(PREFIX + key) or default
    if raw not in allowed:
        raise ValueError(f"{PREFIX}{key} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


# Kubernetes' label syntax (apimachinery's IsQualifiedName and IsValidLabelValue); the chart's
# values schema holds the same patterns, so that what it lets through the operator takes.
LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
LABEL_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
LABEL_KEY_PATTERN = rf"^({LABEL_PREFIX}/)?{LABEL_NAME}$"
LABEL_VALUE_PATTERN = rf"^({LABEL_NAME})?$"


def label_problem(key: str, value: str) -> str | None:
    """What is wrong with a label, as the API server would say it; None when nothing is."""
    prefix, _, name = key.rpartition("/")
    if not re.fullmatch(LABEL_KEY_PATTERN, key) or len(prefix) > 253 or len(name) > 63:
        return (
            f"label key {key!r} is not [prefix/]name: a name of at most 63 letters, digits, "
            "'-', '_' or '.' that begins and ends with a letter or digit, after an optional "
            "lower-case DNS subdomain prefix of at most 253 characters"
        )
    if not re.fullmatch(LABEL_VALUE_PATTERN, value) or len(value) > 63:
        return (
            f"label value {value!r} (of {key!r}) must be empty or at most 63 letters, digits, "
            "'-', '_' or '.' that begin and end with a letter or digit"
        )
    return None


def _labels(environ: Mapping[str, str], key: str) -> tuple[tuple[str, str], ...]:
    """`k=v,k2=v2` (what `kubectl label` takes), each a valid label."""
    out: list[tuple[str, str]] = []
    for item in environ.get(PREFIX + key, "").replace(",", " ").split():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{PREFIX}{key}: {item!r} is not key=value")
        problem = label_problem(name, value)
        if problem:
            raise ValueError(f"{PREFIX}{key}: {problem}")
        out.append((name, value))
    return tuple(out)


def _port(environ: Mapping[str, str], key: str) -> int:
    raw = environ.get(PREFIX + key) or "0"
    if not raw.isdigit() or int(raw) > 65535:
        raise ValueError(f"{PREFIX}{key} must be a port number or 0, got {raw!r}")
    return int(raw)


def allowed_images(raw: str) -> tuple[str, ...]:
    """The allow list as the chart writes it: entries separated by commas or white space, each
    checked (`images.parse_entry`)."""
    return _checked_images(tuple(e for e in raw.replace(",", " ").split() if e))


def _checked_images(entries: tuple[str, ...]) -> tuple[str, ...]:
    for entry in entries:
        try:
            images.parse_entry(entry)
        except ValueError as e:
            raise ValueError(f"{PREFIX}ALLOWED_IMAGES: {e}") from None
    return entries


def image_allowed(image: str, allowed: tuple[str, ...]) -> bool:
    """Whether `image` is on the allow list (an empty list allows any); see `images`."""
    return images.image_allowed(image, allowed)


def native_from_version(major: str, minor: str) -> bool:
    """Native sidecars (init containers with restartPolicy Always) are on by default from 1.29."""
    try:
        return (int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)) >= (1, 29)
    except ValueError:
        return False


def sleep_action_from_version(major: str, minor: str) -> bool:
    """The preStop `sleep` handler is on by default from 1.30 (behind a gate in 1.29)."""
    try:
        return (int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)) >= (1, 30)
    except ValueError:
        return False


def retry_delay(retry: int, ceiling: float) -> float:
    """Backoff for failed reconciliations: 1, 2, 4, ... seconds, at most `ceiling`."""
    return float(min(ceiling, 2 ** min(retry, 16)))


# kopf's own retries of an API request (seconds between them), and what they add up to.
KOPF_BACKOFFS = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)


def api_backoffs(ceiling: float) -> tuple[float, ...]:
    """kopf's backoffs, none longer than `ceiling`, and as many as it takes to wait as long in
    all as kopf's own: an outage of up to a minute is retried through, never waited out long."""
    out: list[float] = []
    while sum(out) < sum(KOPF_BACKOFFS):
        out.append(min(ceiling, KOPF_BACKOFFS[min(len(out), len(KOPF_BACKOFFS) - 1)]))
    return tuple(out)
