"""The admission webhook's HTTPS server, as kopf's admission machinery expects of a server: it
serves kopf's admission requests and yields each client configuration (URL or Service, and the
CA bundle) that the MutatingWebhookConfiguration must carry. It makes its own certificates
(`certs`) and makes new ones before they expire: the bundle with the new CA is published first,
the server switches to the new certificate a little later (new connections only)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp.web
import kopf

from ..logic import certs

logger = logging.getLogger(__name__)
# Largest admission request read (a pod is far smaller; etcd stores at most 1.5 MiB per object).
MAX_REQUEST_BYTES = 3 << 20
# How long the new CA is published before the server presents the certificate it signed: long
# enough for the API server to see the changed configuration.
SWITCH_SECONDS = 30.0

Publish = Callable[[bytes], Awaitable[None]]


class WebhookServer:
    """`publish(ca_bundle)` is called with every new bundle; it returns once the configuration
    holds it. kopf gets the bundle as its client config too (its own configuration manager is
    off: the operator writes the configuration itself, scoped more narrowly than kopf would)."""

    def __init__(
        self,
        port: int,
        hosts: Sequence[str],
        lifetime_seconds: float,
        publish: Publish,
        addr: str = "0.0.0.0",
    ) -> None:
        self.port, self.hosts, self.addr = port, list(hosts), addr
        self.lifetime = datetime.timedelta(seconds=lifetime_seconds)
        self.publish = publish
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.issued: certs.Issued | None = None
        self.cas: list[bytes] = []  # this server's CAs in the bundle: the current one, and the
        # previous one until its certificate is no longer served

    def _load(self, issued: certs.Issued) -> None:
        # load_cert_chain reads files; the key never leaves this process's private temp dir.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert.write_bytes(issued.cert_pem)
            key.touch(mode=0o600)
            key.write_bytes(issued.key_pem)
            self.context.load_cert_chain(cert, key)
        self.issued = issued

    def _issue(self) -> certs.Issued:
        return certs.issue(self.hosts, self.lifetime, datetime.datetime.now(datetime.UTC))

    async def __call__(self, fn: Any) -> AsyncIterator[dict[str, Any]]:
        issued = self._issue()
        self._load(issued)
        self.cas = [issued.ca_pem]
        app = aiohttp.web.Application(client_max_size=MAX_REQUEST_BYTES)

        async def serve(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
            return await kopf.WebhookServer._serve(_with_namespace(fn), request)

        app.add_routes([aiohttp.web.post("/{id:[a-z]+}", serve)])
        runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = aiohttp.web.TCPSite(runner, self.addr, self.port, ssl_context=self.context)
            await site.start()
            logger.info("admission webhook listening on %s:%d", self.addr, self.port)
            while True:
                await self.publish(b"".join(self.cas))
                yield {"caBundle": base64.b64encode(b"".join(self.cas)).decode()}
                # Two thirds into the certificate's life, a new CA and certificate.
                left = (issued.not_after - datetime.datetime.now(datetime.UTC)).total_seconds()
                await asyncio.sleep(max(1.0, left - self.lifetime.total_seconds() / 3))
                issued = self._issue()
                self.cas = [issued.ca_pem, *self.cas[:1]]
                await self.publish(b"".join(self.cas))
                await asyncio.sleep(min(SWITCH_SECONDS, self.lifetime.total_seconds() / 10))
                self._load(issued)
                self.cas = [issued.ca_pem]
                logger.info("admission webhook: new certificate, valid until %s", issued.not_after)
        finally:
            await runner.cleanup()


def _with_namespace(fn: Any) -> Any:
    """The API server leaves `metadata.namespace` out of objects created by `generateName`
    (ReplicaSets' pods); the request names it. kopf reads the namespace from the object."""

    async def call(data: Any, **kwargs: Any) -> Any:
        if not _is_review(data):  # kopf reads these keys unchecked: a KeyError and a traceback
            raise aiohttp.web.HTTPBadRequest(reason="not an AdmissionReview")
        request = data["request"]
        obj = request.get("object")
        if isinstance(obj, dict) and request.get("namespace"):
            meta = obj.setdefault("metadata", {})
            if isinstance(meta, dict) and not meta.get("namespace"):
                meta["namespace"] = request["namespace"]
        return await fn(data, **kwargs)

    return call


def _is_review(data: Any) -> bool:
    """Whether `data` has what kopf reads of an AdmissionReview without looking: the request
    and the group, version and resource it is about."""
    request = data.get("request") if isinstance(data, dict) else None
    resource = request.get("resource") if isinstance(request, dict) else None
    return isinstance(resource, dict) and all(
        isinstance(resource.get(key), str) for key in ("group", "version", "resource")
    )
