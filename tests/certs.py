"""Throw-away X.509 material for tests: a CA, a server certificate for 127.0.0.1/localhost, client certificates.

Everything is written as PEM files into one directory (keys ``0600``), the form ``[daemon.tls]`` and
``sandboxctl --tls-*`` read::

    ca = make_ca(tmp_path)                                   # tmp_path/ca.pem, ca.key
    server = ca.issue_server()                               # tmp_path/server.pem, server.key
    client = ca.issue_client("gateway", "CN=gateway.example,O=Example")
    client.cert_file, client.key_file, ca.cert_file

Subjects are RFC 4514 strings, most specific attribute first, as ``[principals.*] certificate_subjects``
writes them. Keys are EC P-256: fast to make, accepted by every TLS stack gRPC uses.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = ["CertificateAuthority", "Issued", "make_ca"]

_VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM files; ``subject`` as RFC 4514."""

    cert_file: Path
    key_file: Path
    subject: str

    @property
    def cert_pem(self) -> bytes:
        return self.cert_file.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key_file.read_bytes()


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed CA whose files live in ``directory``; it issues into the same directory."""

    directory: Path
    cert_file: Path
    key_file: Path
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert_file.read_bytes()

    def _issue(
        self,
        name: str,
        subject: x509.Name,
        *,
        usage: x509.ObjectIdentifier,
        hosts: Sequence[str] = (),
        not_after: datetime.datetime | None = None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(not_after or now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()), critical=False
            )
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.private_key, hashes.SHA256())
        issued = Issued(self.directory / f"{name}.pem", self.directory / f"{name}.key", subject.rfc4514_string())
        _write_key(issued.key_file, key)
        _write_cert(issued.cert_file, cert)
        return issued

    def issue_server(self, name: str = "server", hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> Issued:
        """A server certificate valid for ``hosts`` (IP addresses and DNS names), files ``<name>.pem/.key``."""
        subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, hosts[0] if hosts else name)])
        return self._issue(name, subject, usage=ExtendedKeyUsageOID.SERVER_AUTH, hosts=hosts)

    def issue_client(self, name: str, subject: str, *, not_after: datetime.datetime | None = None) -> Issued:
        """A client certificate with ``subject`` (RFC 4514, e.g. ``"CN=gateway.example,O=Example"``)."""
        return self._issue(
            name, x509.Name.from_rfc4514_string(subject), usage=ExtendedKeyUsageOID.CLIENT_AUTH, not_after=not_after
        )


def make_ca(directory: Path, name: str = "ca", *, common_name: str = "sandboxd test CA") -> CertificateAuthority:
    """A new CA in ``directory`` (created if needed), files ``<name>.pem`` and ``<name>.key``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    ca = CertificateAuthority(directory, directory / f"{name}.pem", directory / f"{name}.key", cert, key)
    _write_key(ca.key_file, key)
    _write_cert(ca.cert_file, cert)
    return ca
