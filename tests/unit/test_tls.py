"""TLS through a real grpc.aio server and client on 127.0.0.1, with certificates from tests/certs.py.

Proves what ``context.auth_context()`` holds in grpcio 1.85 (the facts sandboxd.policy.auth relies on), that a
mapped client certificate authenticates, an unmapped one is AUTH_FAILED, and a client without a certificate
never gets past the handshake. Also the ``[daemon.tls]`` table and the credentials' file errors.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certs  # tests/certs.py, on the path by pyproject's pytest pythonpath
import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from sandboxd.api.status import REASON_METADATA_KEY, reason_from_metadata
from sandboxd.base.errors import ConfigError
from sandboxd.base.refusals import AuthFailed
from sandboxd.base.toml import TomlTable
from sandboxd.policy.auth import Authenticator, Identity
from sandboxd.policy.config import PolicyConfig, parse_policy
from sandboxd.policy.tls import TlsConfig, channel_credentials, parse_tls, server_credentials

GATEWAY = "CN=gateway.example,O=Example"
UNICODE = "CN=Jürgen,O=Müller GmbH"
MULTI_VALUED = "CN=ops+UID=42,O=Example"
PRINCIPALS = f"""
[principals.local-admin]
roles = ["admin"]
[principals.gateway]
roles = ["customer-service"]
certificate_subjects = ["{GATEWAY}"]
[principals.juergen]
roles = ["analyst"]
certificate_subjects = ["{UNICODE}", "UID=42+CN=ops,O=Example"]
"""


def make_policy() -> PolicyConfig:
    top = TomlTable(tomllib.loads(PRINCIPALS), file="sandboxd.toml")
    policy = parse_policy(top)
    top.finish()
    return policy


@dataclass
class Seen:
    """What the handler saw of its last call."""

    peer: str = ""
    auth_context: dict[str, list[bytes]] = field(default_factory=dict)
    identity: Identity | None = None


def _handler(authenticator: Authenticator, seen: Seen) -> grpc.GenericRpcHandler:
    async def whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen.peer = context.peer()
        seen.auth_context = {key: list(values) for key, values in context.auth_context().items()}
        try:
            seen.identity = authenticator.authenticate(
                metadata=tuple(context.invocation_metadata() or ()), peer=seen.peer, auth_context=seen.auth_context
            )
        except AuthFailed as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message,
                                trailing_metadata=((REASON_METADATA_KEY, exc.reason),))
        return seen.identity.principal.encode()

    return grpc.method_handlers_generic_handler("test.Who", {"Am": grpc.unary_unary_rpc_method_handler(whoami)})


async def _serve(
    port_spec: str, credentials: grpc.ServerCredentials | None, body: Callable[[str, Seen], Awaitable[None]]
) -> None:
    seen = Seen()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handler(Authenticator.from_config(make_policy()), seen),))
    port = server.add_secure_port(port_spec, credentials) if credentials else server.add_insecure_port(port_spec)
    await server.start()
    try:
        await body(port_spec.replace(":0", f":{port}"), seen)
    finally:
        await server.stop(None)


async def _call(target: str, credentials: grpc.ChannelCredentials | None, metadata: Any = None) -> bytes:
    channel = grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target)
    async with channel:
        result: bytes = await channel.unary_unary("/test.Who/Am")(b"", timeout=10, metadata=metadata)
        return result


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("pki")
    ca = certs.make_ca(directory)
    return {
        "ca": ca,
        "server": ca.issue_server(),
        "gateway": ca.issue_client("gateway", GATEWAY),
        "unicode": ca.issue_client("unicode", UNICODE),
        "multi": ca.issue_client("multi", MULTI_VALUED),
        "stranger": ca.issue_client("stranger", "CN=stranger.example,O=Example"),
        "rogue": certs.make_ca(directory / "rogue").issue_client("rogue", GATEWAY),  # right subject, wrong CA
    }


def mtls_server(pki: dict[str, Any]) -> grpc.ServerCredentials:
    return server_credentials(TlsConfig(pki["server"].cert_file, pki["server"].key_file, pki["ca"].cert_file))


def client(pki: dict[str, Any], name: str | None) -> grpc.ChannelCredentials:
    issued = pki[name] if name else None
    return channel_credentials(pki["ca"].cert_file, issued.cert_file if issued else None,
                               issued.key_file if issued else None)


def test_a_mapped_client_certificate_and_what_grpc_reports(pki: dict[str, Any]) -> None:
    async def body(target: str, seen: Seen) -> None:
        assert await _call(target, client(pki, "gateway")) == b"gateway"
        assert seen.identity == Identity("gateway", ("customer-service",), "mtls")
        assert seen.peer.startswith("ipv4:127.0.0.1:")
        context = seen.auth_context
        assert context["transport_security_type"] == [b"ssl"]
        assert context["x509_subject"] == [GATEWAY.encode()]
        assert context["x509_common_name"] == [b"gateway.example"]
        assert context["x509_pem_cert"] == [pki["gateway"].cert_pem]
        assert {"security_level", "ssl_tls_version"} <= set(context)

    asyncio.run(_serve("127.0.0.1:0", mtls_server(pki), body))


def test_subjects_are_compared_as_names_not_as_grpcs_text(pki: dict[str, Any]) -> None:
    async def body(target: str, seen: Seen) -> None:
        assert await _call(target, client(pki, "unicode")) == b"juergen"
        # gRPC escapes UTF-8 the OpenSSL way: its text would never equal the configured subject
        assert seen.auth_context["x509_subject"] == [rb"CN=J\C3\BCrgen,O=M\C3\BCller GmbH"]
        assert await _call(target, client(pki, "multi")) == b"juergen"
        assert seen.auth_context["x509_subject"] == [b"UID=42+CN=ops,O=Example"]  # reordered, yet the same name

    asyncio.run(_serve("127.0.0.1:0", mtls_server(pki), body))


def test_an_unmapped_certificate_is_auth_failed(pki: dict[str, Any]) -> None:
    async def body(target: str, seen: Seen) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(target, client(pki, "stranger"))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason_from_metadata(caught.value.trailing_metadata()) == "AUTH_FAILED"
        assert "'CN=stranger.example,O=Example' is no principal's" in (caught.value.details() or "")

    asyncio.run(_serve("127.0.0.1:0", mtls_server(pki), body))


@pytest.mark.parametrize("name", [None, "rogue"])
def test_no_certificate_or_a_foreign_one_fails_the_handshake(pki: dict[str, Any], name: str | None) -> None:
    async def body(target: str, seen: Seen) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(target, client(pki, name))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the connection, not the call, failed
        assert seen.auth_context == {}  # the handler never ran

    asyncio.run(_serve("127.0.0.1:0", mtls_server(pki), body))


def test_tls_without_client_ca_needs_a_token(pki: dict[str, Any]) -> None:
    """Without client_ca_file no client certificate is even requested: the caller is known by its token."""
    credentials = server_credentials(TlsConfig(pki["server"].cert_file, pki["server"].key_file))

    async def body(target: str, seen: Seen) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _call(target, client(pki, "gateway"))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "no credentials" in (caught.value.details() or "")
        assert "x509_pem_cert" not in seen.auth_context and seen.auth_context["transport_security_type"] == [b"ssl"]

    asyncio.run(_serve("127.0.0.1:0", credentials, body))


def test_the_unix_socket_peer_and_context(tmp_path: Path) -> None:
    async def body(target: str, seen: Seen) -> None:
        assert await _call(target, None) == b"local-admin"
        assert seen.peer == "unix:"
        assert seen.auth_context["transport_security_type"] == [b"insecure"]
        assert seen.identity == Identity("local-admin", ("admin",), "unix-socket")

    asyncio.run(_serve(f"unix:{tmp_path / 's.sock'}", None, body))


# -- [daemon.tls] and the credentials' errors --------------------------------------------------------------------


def tls_table(text: str) -> TomlTable:
    return TomlTable(tomllib.loads(text), file="/etc/sandboxd/sandboxd.toml", prefix="daemon.tls")


def test_parse_tls() -> None:
    tls = parse_tls(tls_table('cert_file = "/t/s.pem"\nkey_file = "/t/s.key"\nclient_ca_file = "/t/ca.pem"'))
    assert tls == TlsConfig(Path("/t/s.pem"), Path("/t/s.key"), Path("/t/ca.pem")) and tls.require_client_cert
    plain = parse_tls(tls_table('cert_file = "/t/s.pem"\nkey_file = "/t/s.key"\nclient_ca_file = ""'))
    assert plain == TlsConfig(Path("/t/s.pem"), Path("/t/s.key")) and not plain.require_client_cert
    assert parse_tls(tls_table("")) is None
    assert parse_tls(tls_table('cert_file = ""\nkey_file = ""')) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('cert_file = "/t/s.pem"', "daemon.tls.key_file: required with cert_file"),
        ('key_file = "/t/s.key"', "daemon.tls.cert_file: required with key_file"),
        ('client_ca_file = "/t/ca.pem"', "daemon.tls.client_ca_file: needs cert_file and key_file"),
        ('cert_file = "s.pem"\nkey_file = "/t/s.key"', "daemon.tls.cert_file: must be an absolute path"),
        ('cert_file = "/t/s.pem"\nkey_file = "/t/s.key"\nrequire_client_cert = false',
         "daemon.tls.require_client_cert: unknown key"),
    ],
)
def test_parse_tls_errors(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tls(tls_table(text))
    assert caught.value.message.startswith(f"/etc/sandboxd/sandboxd.toml: {says}"), caught.value.message


def test_server_credentials_name_the_bad_file(pki: dict[str, Any], tmp_path: Path) -> None:
    server, ca, other = pki["server"], pki["ca"], pki["gateway"]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    missing = tmp_path / "missing.pem"
    cases = [
        (TlsConfig(missing, server.key_file), f"daemon.tls.cert_file: {missing}: cannot read: No such file"),
        (TlsConfig(garbage, server.key_file), f"daemon.tls.cert_file: {garbage}: no PEM certificate in it"),
        (TlsConfig(server.cert_file, garbage), f"daemon.tls.key_file: {garbage}: not a PEM key"),
        (TlsConfig(server.cert_file, other.key_file),
         f"daemon.tls.key_file: {other.key_file}: not the key of the certificate in {server.cert_file}"),
        (TlsConfig(server.cert_file, server.key_file, garbage),
         f"daemon.tls.client_ca_file: {garbage}: no PEM certificate in it"),
    ]
    for tls, says in cases:
        with pytest.raises(ConfigError) as caught:
            server_credentials(tls)
        assert caught.value.message.startswith(says), caught.value.message
    assert isinstance(server_credentials(TlsConfig(server.cert_file, server.key_file, ca.cert_file)),
                      grpc.ServerCredentials)


def test_an_encrypted_server_key_is_refused(pki: dict[str, Any], tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki["server"].key_pem, password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"passphrase")))
    with pytest.raises(ConfigError, match="encrypted"):
        server_credentials(TlsConfig(pki["server"].cert_file, encrypted))


def test_channel_credentials_errors(pki: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs its key"):
        channel_credentials(pki["ca"].cert_file, pki["gateway"].cert_file)
    with pytest.raises(ConfigError, match="cannot read"):
        channel_credentials(tmp_path / "nope.pem")
