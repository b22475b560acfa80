"""A small async Kubernetes API client over the credentials kopf logged in with: plain dicts in
and out, the patch type named on every write, and bounded timeouts. Only I/O lives here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from . import names

Obj = dict[str, Any]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message

    @property
    def conflict(self) -> bool:
        # A failed JSON Patch `test` is 422 on a real API server (some emulators answer 500);
        # a stale resourceVersion is 409.
        return self.status in (409, 422, 500)


class Kube:
    def __init__(self, info: kopf.ConnectionInfo, timeout_seconds: float = 10.0) -> None:
        self.server = info.server.rstrip("/")
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
                    try:
                        status = json.loads(text)
                        reason, message = status.get("reason", ""), status.get("message", text)
                    except ValueError:
                        reason, message = resp.reason or "", text[:500]
                    raise ApiError(resp.status, reason, message)
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


def deployment_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{quote(namespace)}/deployments/{quote(name)}"


def configmap_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{quote(namespace)}/configmaps"
    return f"{base}/{quote(name)}" if name else base


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/pods"


def proxy_path(namespace: str, name: str) -> str:
    return (
        f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{quote(namespace)}/"
        f"{names.PLURAL}/{quote(name)}"
    )


def hpa_path(namespace: str) -> str:
    return f"/apis/autoscaling/v2/namespaces/{quote(namespace)}/horizontalpodautoscalers"


def scaledobject_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/keda.sh/v1alpha1/namespaces/{quote(namespace)}/scaledobjects"
    return f"{base}/{quote(name)}" if name else base


def scale_path(namespace: str, deployment: str) -> str:
    """A Deployment's `scale` subresource: what autoscalers write, never spec.replicas itself."""
    return deployment_path(namespace, deployment) + "/scale"
