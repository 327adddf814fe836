"""TLS on the TCP listener: the ``[daemon.tls]`` table, and the gRPC credentials of both ends.

::

    [daemon.tls]
    cert_file = "/etc/sandboxd/tls/server.pem"       # the server's certificate chain (PEM)
    key_file = "/etc/sandboxd/tls/server.key"        # its private key (PEM)
    client_ca_file = "/etc/sandboxd/tls/clients-ca.pem"  # "" = TLS only: TCP callers present tokens

With ``client_ca_file`` every TCP caller must present a client certificate that CA signed — the handshake
refuses one without — and its subject may name a principal (``certificate_subjects``); a bearer token on
top still takes precedence. gRPC's Python API cannot *ask* for a client certificate without requiring it
(``require_client_auth=False`` does not request one at all), so there is no "optional mTLS".

A table whose ``cert_file`` and ``key_file`` are both absent or ``""`` is no TLS. The files are read
when the listener is made (:func:`server_credentials`), where an unreadable or mismatched file is a
ConfigError naming the key and the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from sandboxd.base.errors import ConfigError
from sandboxd.base.toml import TomlTable, optional_absolute_path


@dataclass(frozen=True)
class TlsConfig:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @property
    def require_client_cert(self) -> bool:
        """Whether the handshake demands (and verifies) a client certificate: exactly with a client CA."""
        return self.client_ca_file is not None




def parse_tls(table: TomlTable) -> TlsConfig | None:
    """The ``[daemon.tls]`` table (finished here); None when it names no certificate and no key."""
    cert_file = table.take_parsed("cert_file", None, optional_absolute_path)
    key_file = table.take_parsed("key_file", None, optional_absolute_path)
    client_ca_file = table.take_parsed("client_ca_file", None, optional_absolute_path)
    table.finish()
    if cert_file is None and key_file is None:
        if client_ca_file is not None:
            raise table.error("client_ca_file", "needs cert_file and key_file: the server's own certificate")
        return None
    if cert_file is None:
        raise table.error("cert_file", "required with key_file")
    if key_file is None:
        raise table.error("key_file", "required with cert_file")
    return TlsConfig(cert_file, key_file, client_ca_file)


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"daemon.tls.{key}: {path}: cannot read: {exc.strerror}") from None


def _certificates(path: Path, key: str) -> tuple[bytes, list[x509.Certificate]]:
    data = _read(path, key)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"daemon.tls.{key}: {path}: no PEM certificate in it") from None
    return data, certs


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """Credentials of the TCP listener; mutual TLS when ``tls`` has a client CA."""
    cert_pem, chain = _certificates(tls.cert_file, "cert_file")
    key_pem = _read(tls.key_file, "key_file")
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        reason = "encrypted (sandboxd cannot ask for a passphrase)" if isinstance(exc, TypeError) else "not a PEM key"
        raise ConfigError(f"daemon.tls.key_file: {tls.key_file}: {reason}") from None
    own = chain[0].public_key()
    if private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != own.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise ConfigError(
            f"daemon.tls.key_file: {tls.key_file}: not the key of the certificate in {tls.cert_file}"
        )
    client_ca_pem = _certificates(tls.client_ca_file, "client_ca_file")[0] if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=client_ca_pem, require_client_auth=tls.require_client_cert
    )


def channel_credentials(
    ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """A client's credentials: trust ``ca_file`` for the daemon; present ``cert_file``/``key_file`` (mTLS)."""
    if (cert_file is None) != (key_file is None):
        raise ConfigError("a client certificate needs its key, and a key its certificate")

    def read(path: Path | None) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca_file), private_key=read(key_file), certificate_chain=read(cert_file)
    )
