"""The webhook's HTTPS server on loopback: it serves admission reviews with its own certificate,
fills in the namespace the API server leaves out, and makes a new certificate before the old one
expires, publishing the new CA before it presents the certificate signed by it."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from tests.helpers.processes import free_port

from embedding_proxy_operator.io.webhook_server import WebhookServer


async def peer_cert(port: int, bundle: bytes, tmp: Path) -> x509.Certificate:
    (tmp / "ca.pem").write_bytes(bundle)
    context = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der)


async def test_serves_reviews_and_rotates_before_expiry(tmp_path: Path) -> None:
    port = free_port()
    published: list[bytes] = []
    seen: list[dict[str, Any]] = []

    async def publish(bundle: bytes) -> None:
        published.append(bundle)

    async def review(data: dict[str, Any], **_: Any) -> dict[str, Any]:
        seen.append(data)
        return {"response": {"uid": data["request"]["uid"], "allowed": True}}

    # Four seconds of life: a new certificate after about 2.7 s.
    server = WebhookServer(port, ["127.0.0.1"], 4.0, publish, addr="127.0.0.1")
    configs = server(review)
    first = await anext(configs)
    assert len(published) == 1 and len(x509.load_pem_x509_certificates(published[0])) == 1
    assert first["caBundle"]
    old = await peer_cert(port, published[0], tmp_path)

    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    resource = {"group": "", "version": "v1", "resource": "pods"}
    request = {
        "request": {"uid": "1", "namespace": "ns", "resource": resource, "object": {"metadata": {}}}
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"https://127.0.0.1:{port}/pods", data=json.dumps(request), ssl=context
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["response"]["allowed"] is True
        # A path that names no handler is refused.
        async with session.post(f"https://127.0.0.1:{port}/x/y", data="{}", ssl=context) as resp:
            assert resp.status == 404
        # What is no AdmissionReview is refused before kopf reads it (before: 500, a traceback).
        for body in ("{}", "[]", '{"request": 1}', '{"request": {"resource": {"group": 1}}}'):
            url = f"https://127.0.0.1:{port}/probe"
            async with session.post(url, data=body, ssl=context) as resp:
                assert resp.status == 400, body
    assert len(seen) == 1
    assert seen[0]["request"]["object"]["metadata"]["namespace"] == "ns"

    second = await asyncio.wait_for(anext(configs), timeout=30)
    # Published first with both CAs, then with the new one alone once it is served.
    assert len(published) == 3
    both = x509.load_pem_x509_certificates(published[1])
    (new_ca,) = x509.load_pem_x509_certificates(published[2])
    assert len(both) == 2 and both[0] == new_ca
    assert x509.load_pem_x509_certificates(published[0])[0] == both[1]
    assert second["caBundle"] != first["caBundle"]
    new = await peer_cert(port, published[2], tmp_path)
    assert new.serial_number != old.serial_number
    new.verify_directly_issued_by(new_ca)
    await configs.aclose()
