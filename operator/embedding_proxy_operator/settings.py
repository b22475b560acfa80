"""The operator's own settings, from the environment (the chart sets them on its Deployment)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

PREFIX = "EMBEDDING_PROXY_OPERATOR_"


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
    # Longest delay between retries of a failed reconciliation.
    max_retry_seconds: float = 60.0
    native_sidecars: Literal["auto", "true", "false"] = "auto"
    # Port of the operator's own /metrics; 0: not served.
    metrics_port: int = 0
    # Sidecar images an EmbeddingProxy may name (see `image_allowed`); empty: any image, which
    # lets whoever writes an EmbeddingProxy run any image in the Deployments it targets.
    allowed_images: tuple[str, ...] = ()

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
        )


def allowed_images(raw: str) -> tuple[str, ...]:
    """The allow list as the chart writes it: entries separated by commas or white space."""
    entries = tuple(e for e in raw.replace(",", " ").split() if e)
    for entry in entries:
        if entry.startswith(("/", ":", "@")):
            raise ValueError(f"{PREFIX}ALLOWED_IMAGES: {entry!r} is no image or repository")
    return entries


def image_allowed(image: str, allowed: tuple[str, ...]) -> bool:
    """Whether `image` is on the allow list (an empty list allows any). An entry ending in `/`
    allows every image under that registry or path; any other entry allows that repository with
    any tag or digest (`repo`, `repo:tag`, `repo@sha256:...`), or that exact reference. Images
    are compared as written: `embedding-proxy` does not allow `docker.io/library/embedding-proxy`.
    """
    if not allowed:
        return True
    return any(_allows(entry, image) for entry in allowed)


def _allows(entry: str, image: str) -> bool:
    if entry.endswith("/"):
        return image.startswith(entry)
    if image == entry or image.startswith(entry + "@"):
        return True
    # A tag, not a registry port: `localhost` must not allow `localhost:5000/anything`.
    return image.startswith(entry + ":") and "/" not in image[len(entry) + 1 :]


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
