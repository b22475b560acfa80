"""Pure: the admission webhook's certificates. A CA of the operator's own signs a serving
certificate for the names the API server uses to reach the webhook (the Service's DNS names, or
the address of a URL); the CA goes into the MutatingWebhookConfiguration's caBundle. Both are
made anew before they expire (`webhook_server` rotates them), and the bundle keeps the previous
CA until the new certificate is in use, so that no request is refused in between."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Certificates are valid from a little before they are made: clocks of the API server and the
# operator's node may differ.
CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Issued:
    ca_pem: bytes
    cert_pem: bytes  # the serving certificate, then the CA (a chain)
    key_pem: bytes
    not_after: datetime.datetime


def service_names(service: str) -> list[str]:
    """The DNS names the API server may use for a Service given as `name.namespace`."""
    name, _, namespace = service.partition(".")
    if not name or not namespace:
        raise ValueError(f"a webhook Service is named as name.namespace, got {service!r}")
    base = f"{name}.{namespace}"
    return [name, base, f"{base}.svc", f"{base}.svc.cluster.local"]


def _sans(hosts: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def issue(hosts: Sequence[str], lifetime: datetime.timedelta, now: datetime.datetime) -> Issued:
    """A new CA and a serving certificate for `hosts` (DNS names or IP addresses), both valid
    for `lifetime` from `now`."""
    if not hosts:
        raise ValueError("a serving certificate needs at least one name")
    start, end = now - CLOCK_SKEW, now + lifetime
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "embedding-proxy-operator CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem)
    return Issued(
        ca_pem=ca_pem,
        cert_pem=leaf.public_bytes(pem) + ca_pem,
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        not_after=end,
    )


def bundle(mine: Sequence[bytes], present: bytes, now: datetime.datetime, keep: int = 8) -> bytes:
    """The caBundle to publish: this replica's CAs (`mine`), and the other replicas' CAs found in
    the bundle now `present` that are still valid (every replica serves behind one Service), at
    most `keep` CAs in all, the ones that expire last."""
    certs: dict[bytes, x509.Certificate] = {}
    for pem in [*mine, present]:
        for cert in x509.load_pem_x509_certificates(pem) if pem.strip() else []:
            if cert.not_valid_after_utc > now:
                certs[cert.fingerprint(hashes.SHA256())] = cert
    own = {c.fingerprint(hashes.SHA256()) for p in mine for c in x509.load_pem_x509_certificates(p)}
    ranked = sorted(
        certs.items(), key=lambda kv: (kv[0] not in own, -kv[1].not_valid_after_utc.timestamp())
    )
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for _, c in ranked[:keep])
