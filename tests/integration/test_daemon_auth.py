"""Authentication through a real daemon: who a caller is, or UNAUTHENTICATED (AUTH_FAILED).

One daemon whose Unix socket names no principal (``unix_socket_principal = ""``: a caller there must present
a token), with a static token, HS256 JWTs (``roles`` claim) and a TCP listener with mutual TLS. It proves:
no token and an unknown token are refused and audited; a good JWT runs with the roles of its claim, while a
wrong signature, an expired token and a wrong audience are refused; a mapped client certificate runs a tool,
while no certificate or one from another CA fails the handshake (UNAVAILABLE) and an unmapped subject is
AUTH_FAILED; and sandboxctl's ``--token``, ``$SANDBOXD_TOKEN`` and ``--address/--tls-*`` work.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from certs import CertificateAuthority, Issued, make_ca
from daemon_harness import Daemon, make_daemon, running

from sandboxd.cli.client import SandboxClient, SandboxdError, TlsFiles

pytestmark = pytest.mark.root

QUICK = """
description = "exit 0 at once"
argv = ["/bin/true"]
"""

STATIC_TOKEN = "ci-static-token-0123456789"
JWT_SECRET = b"an-hs256-secret-of-more-than-32-bytes-for-tests"
JWT_ISSUER = "https://issuer.example"
JWT_AUDIENCE = "sandboxd-test"
GATEWAY_SUBJECT = "CN=gateway.example,O=Example"
STRANGER_SUBJECT = "CN=stranger.example,O=Example"


@dataclass(frozen=True)
class Setup:
    """The running daemon and what its callers hold."""

    daemon: Daemon
    address: str  # the mTLS listener, host:port
    ca: CertificateAuthority
    gateway: Issued  # mapped to principal "gateway"
    stranger: Issued  # same CA, a subject no principal has
    impostor: Issued  # the gateway's subject, from another CA

    def tls_client(self, issued: Issued | None, *, token: str = "") -> SandboxClient:
        files = TlsFiles(self.ca.cert_file)
        if issued is not None:
            files = TlsFiles(self.ca.cert_file, issued.cert_file, issued.key_file)
        return SandboxClient(target=self.address, tls=files, token=token)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def policy_toml(ca: CertificateAuthority, server: Issued, key_file: Path) -> str:
    return f"""
[daemon.tls]
cert_file = "{server.cert_file}"
key_file = "{server.key_file}"
client_ca_file = "{ca.cert_file}"

[auth]
unix_socket_principal = ""
jwt_key_file = "{key_file}"
jwt_issuer = "{JWT_ISSUER}"
jwt_audience = "{JWT_AUDIENCE}"

[principals.ci]
roles = ["runner"]
token_sha256 = ["{hashlib.sha256(STATIC_TOKEN.encode()).hexdigest()}"]

[principals.gateway]
roles = ["runner"]
certificate_subjects = ["{GATEWAY_SUBJECT}"]

[roles.runner]
tools = ["quick"]
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """One daemon for the module (a start costs ~0.5 s), checked to have left nothing at the end."""
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    tmp = tmp_path_factory.mktemp("auth")
    ca = make_ca(tmp / "pki")
    server = ca.issue_server()
    gateway = ca.issue_client("gateway", GATEWAY_SUBJECT)
    stranger = ca.issue_client("stranger", STRANGER_SUBJECT)
    impostor = make_ca(tmp / "other-pki", common_name="another CA").issue_client("impostor", GATEWAY_SUBJECT)
    key_file = tmp / "jwt.key"
    key_file.write_bytes(JWT_SECRET)
    key_file.chmod(0o600)
    address = f"127.0.0.1:{free_port()}"
    daemon = make_daemon(tmp, tools={"quick": QUICK}, tcp_listen=address,
                         extra=policy_toml(ca, server, key_file))
    with running(daemon):
        yield Setup(daemon, address, ca, gateway, stranger, impostor)


def mint(*, key: bytes = JWT_SECRET, lifetime_s: int = 300, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "jwt-user", "roles": ["runner"], "iss": JWT_ISSUER, "aud": JWT_AUDIENCE,
               "iat": now, "exp": now + lifetime_s, **claims}
    return jwt.encode(payload, key, algorithm="HS256")


def auth_failure(client: SandboxClient) -> SandboxdError:
    with client, pytest.raises(SandboxdError) as caught:
        client.run_tool("quick", {})
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, "AUTH_FAILED"), caught.value
    return caught.value


def handshake_failure(client: SandboxClient) -> SandboxdError:
    with client, pytest.raises(SandboxdError) as caught:
        client.run_tool("quick", {})
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE, ""), caught.value
    return caught.value


def ctl_env(**extra: str) -> dict[str, str]:
    return {**{key: value for key, value in os.environ.items() if key != "SANDBOXD_TOKEN"}, **extra}


# -- the Unix socket and static tokens -------------------------------------------------------------------

def test_no_token_on_a_socket_without_principal_is_refused_and_audited(setup: Setup) -> None:
    seen = len(setup.daemon.audit_records())
    error = auth_failure(SandboxClient(setup.daemon.socket, token=""))
    assert "must present a bearer token" in error.message
    new = setup.daemon.audit_records()[seen:]
    assert [record["event"] for record in new] == ["decision"], new
    assert new[0]["details"]["outcome"] == "denied"
    assert new[0]["details"]["reason"] == "AUTH_FAILED"
    assert new[0]["principal"] == ""


def test_unknown_static_token_is_refused(setup: Setup) -> None:
    error = auth_failure(SandboxClient(setup.daemon.socket, token="not-a-known-token"))
    assert "not-a-known-token" not in error.message  # a refusal never repeats the credential
    with (SandboxClient(setup.daemon.socket, token="not-a-known-token") as client,
          pytest.raises(SandboxdError) as caught):
        client.list_tools()  # every RPC identifies its caller, not only Execute
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, "AUTH_FAILED")


def test_static_token_runs(setup: Setup) -> None:
    with SandboxClient(setup.daemon.socket, token=STATIC_TOKEN) as client:
        assert client.run_tool("quick", {}).status_name == "OK"
        assert (client.info().principal, list(client.info().roles)) == ("ci", ["runner"])


# -- JWTs ------------------------------------------------------------------------------------------------

def test_jwt_runs_with_the_roles_of_its_claim(setup: Setup) -> None:
    request_id = "jwt-allowed"
    with SandboxClient(setup.daemon.socket, token=mint()) as client:
        assert client.run_tool("quick", {}, request_id=request_id).status_name == "OK"
        info = client.info()
    assert (info.principal, list(info.roles)) == ("jwt:jwt-user", ["runner"])
    [decision] = [record for record in setup.daemon.audit_records()
                  if record["request_id"] == request_id and record["event"] == "decision"]
    assert (decision["principal"], decision["details"]["role"]) == ("jwt:jwt-user", "runner")
    # The same subject with no role in its claim is granted nothing.
    with SandboxClient(setup.daemon.socket, token=mint(roles=[])) as client, pytest.raises(SandboxdError) as caught:
        client.run_tool("quick", {})
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "TOOL_NOT_GRANTED")


@pytest.mark.parametrize(("token", "message"), [
    (lambda: mint(key=b"another-secret-that-is-also-32-bytes-long"), "bad signature"),
    (lambda: mint(lifetime_s=-120), "expired"),  # past the 30 s leeway
    (lambda: mint(aud="another-service"), "wrong audience"),
], ids=["wrong-signature", "expired", "wrong-audience"])
def test_bad_jwt_is_refused(setup: Setup, token: Any, message: str) -> None:
    error = auth_failure(SandboxClient(setup.daemon.socket, token=token()))
    assert message in error.message


# -- mutual TLS ------------------------------------------------------------------------------------------

def test_mapped_client_certificate_runs(setup: Setup) -> None:
    with setup.tls_client(setup.gateway) as client:
        assert client.run_tool("quick", {}).status_name == "OK"
        assert client.info().principal == "gateway"
    with setup.tls_client(setup.gateway, token=STATIC_TOKEN) as client:  # a token on top takes precedence
        assert client.info().principal == "ci"


def test_no_client_certificate_fails_the_handshake(setup: Setup) -> None:
    handshake_failure(setup.tls_client(None))


def test_certificate_of_another_ca_fails_the_handshake(setup: Setup) -> None:
    handshake_failure(setup.tls_client(setup.impostor))  # even with a mapped subject


def test_unmapped_certificate_subject_is_refused(setup: Setup) -> None:
    error = auth_failure(setup.tls_client(setup.stranger))
    assert STRANGER_SUBJECT in error.message


# -- sandboxctl ------------------------------------------------------------------------------------------

def test_sandboxctl_token_option_and_environment(setup: Setup) -> None:
    done = setup.daemon.ctl("--token", STATIC_TOKEN, "run", "quick", env=ctl_env())
    assert done.returncode == 0, done.stderr
    done = setup.daemon.ctl("info", "--json", env=ctl_env(SANDBOXD_TOKEN=STATIC_TOKEN))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["principal"] == "ci"
    done = setup.daemon.ctl("run", "quick", env=ctl_env(SANDBOXD_TOKEN=mint()))
    assert done.returncode == 0, done.stderr
    done = setup.daemon.ctl("run", "quick", env=ctl_env())
    assert done.returncode == 125
    assert b"UNAUTHENTICATED (AUTH_FAILED)" in done.stderr


def test_sandboxctl_over_mutual_tls(setup: Setup) -> None:
    tls = ["--address", setup.address, "--tls-ca", str(setup.ca.cert_file)]
    mapped = [*tls, "--tls-cert", str(setup.gateway.cert_file), "--tls-key", str(setup.gateway.key_file)]
    done = setup.daemon.ctl(*mapped, "run", "quick", env=ctl_env())
    assert done.returncode == 0, done.stderr
    done = setup.daemon.ctl(*mapped, "info", "--json", env=ctl_env())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["principal"] == "gateway"
    done = setup.daemon.ctl(*tls, "run", "quick", env=ctl_env())  # no client certificate
    assert done.returncode == 125
    assert b"UNAVAILABLE" in done.stderr
