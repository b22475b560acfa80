"""A small async Kubernetes API client over the credentials kopf logged in with: plain dicts in
and out, the patch type named on every write, and bounded timeouts. Only I/O lives here."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import kopf

from ..model import names

Obj = dict[str, Any]
T = TypeVar("T")

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
# Longest server message kept in an ApiError.
MAX_MESSAGE = 300


class ApiError(Exception):
    def __init__(
        self, status: int, reason: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message
        # Seconds the server asked us to wait (Retry-After, or the Status's retryAfterSeconds).
        self.retry_after = retry_after

    @property
    def conflict(self) -> bool:
        # The object changed since it was read: a failed JSON Patch `test` of its
        # resourceVersion is 422 (Invalid), a stale resourceVersion in an update is 409.
        return self.status in (409, 422)

    @property
    def transient(self) -> bool:
        """Worth trying again as it is: throttled, the server busy or unreachable."""
        return self.status in (0, 429) or self.status >= 500

    @property
    def retryable(self) -> bool:
        """Worth another read-decide-write round."""
        return self.conflict or self.transient


async def retrying(
    step: Callable[[], Awaitable[T]],
    *,
    what: str,
    logger: logging.Logger,
    max_delay: float,
    attempts: int | None = None,
    first_delay: float = 0.1,
) -> T:
    """Run `step` until it succeeds: the one place where the operator retries API writes. Each
    attempt must read what it decides on afresh (a conflict means the object changed). Retries
    retryable errors with exponential backoff and full jitter up to `max_delay` (but never
    sooner than a Retry-After the server sent); with `attempts`, gives up after that many and
    raises the last error, so that the caller (kopf) can retry later."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await step()
        except ApiError as e:
            if not e.retryable or (attempts is not None and attempt >= attempts):
                raise
            ceiling = min(max_delay, first_delay * 2 ** min(attempt - 1, 16))
            delay = max(random.uniform(ceiling / 2, ceiling), min(e.retry_after or 0, 60))
            logger.info("%s: %s; trying again in %.1f s", what, e, delay)
            await asyncio.sleep(delay)


class Kube:
    def __init__(
        self,
        info: kopf.ConnectionInfo,
        timeout_seconds: float = 10.0,
        fence: Callable[[str], None] | None = None,
    ) -> None:
        self.server = info.server.rstrip("/")
        # Called before every write (it stops the process when this replica is not the leader).
        self._fence = fence
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
            headers={**info.as_http_headers(), "User-Agent": names.FIELD_MANAGER},
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
        )

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Obj:
        if self._fence is not None and method not in ("GET", "HEAD"):
            self._fence(f"{method} {path}")
        query = dict(params or {})
        if method in ("PATCH", "POST", "PUT"):
            query.setdefault("fieldManager", names.FIELD_MANAGER)
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        try:
            async with self._session.request(
                method, self.server + path, data=data, headers=headers, params=query
            ) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise _error(resp.status, resp.reason, resp.headers.get("Retry-After"), text)
                return json.loads(text) if text else {}
        except (TimeoutError, aiohttp.ClientError) as e:
            raise ApiError(0, "Unreachable", f"{method} {path}: {e!r}") from e

    async def get(self, path: str) -> Obj | None:
        try:
            return await self.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def delete(self, path: str) -> bool:
        try:
            await self.request("DELETE", path)
            return True
        except ApiError as e:
            if e.status == 404:
                return False
            raise


def _error(status: int, http_reason: str | None, retry_after: str | None, text: str) -> ApiError:
    """An ApiError from an error response: the Status object's reason and message when it is
    one, and how long the server asked to wait, if it did."""
    reason, message, wait = http_reason or "", text[:500], _seconds(retry_after)
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        reason, message = str(body.get("reason", reason)), str(body.get("message", message))
        details = body.get("details")
        if wait is None and isinstance(details, dict):
            wait = _seconds(details.get("retryAfterSeconds"))
    # The server's message can quote whole objects (managedFields and all): it goes into
    # conditions and Events, so it is cut short.
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return ApiError(status, reason, message, wait)


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date (the API server sends seconds)
    return seconds if seconds >= 0 else None


def segment(name: str) -> str:
    """One path segment: a name never adds segments, climbs out of its namespace or is empty.

    The CRD and spec.py already hold names to DNS-1123; this holds even if one got past them.
    `/` is refused, not escaped: the API server decodes `%2F` before it splits the path.
    """
    if name in ("", ".", "..") or "/" in name or "%" in name:
        raise ValueError(f"{name!r} is not an object name")
    return quote(name, safe="")


def deployment_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{segment(namespace)}/deployments/{segment(name)}"


def replicaset_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{segment(namespace)}/replicasets/{segment(name)}"


def configmap_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{segment(namespace)}/configmaps"
    return f"{base}/{segment(name)}" if name is not None else base


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{segment(namespace)}/pods"


def proxy_path(namespace: str, name: str) -> str:
    return (
        f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{segment(namespace)}/"
        f"{names.PLURAL}/{segment(name)}"
    )


def scaledobject_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/keda.sh/v1alpha1/namespaces/{segment(namespace)}/scaledobjects"
    return f"{base}/{segment(name)}" if name is not None else base


def scale_path(namespace: str, deployment: str) -> str:
    """A Deployment's `scale` subresource: what autoscalers write, never spec.replicas itself."""
    return deployment_path(namespace, deployment) + "/scale"
