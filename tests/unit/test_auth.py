"""Authentication: the socket's principal, static tokens, JWTs (HS256/RS256/ES256) and certificate subjects.

Every refusal is AUTH_FAILED with a message that says what was wrong and never contains the token.
(The mTLS path through a real gRPC server is in test_tls.py; here the auth context is handed in.)
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import logging
import time
import tomllib
from base64 import urlsafe_b64encode
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sandboxd.base.errors import ConfigError
from sandboxd.base.refusals import AuthFailed
from sandboxd.base.toml import TomlTable
from sandboxd.policy.auth import Authenticator, Identity, load_jwt_key
from sandboxd.policy.config import PolicyConfig, parse_policy

ISSUER = "https://gateway.example"
AUDIENCE = "sandboxd"
SECRET = b"0123456789abcdef0123456789abcdef-test-secret"
STATIC_TOKEN = "st4tic-t0ken-of-the-gateway"
TCP_PEER = "ipv4:127.0.0.1:50123"
SOCKET_PEER = "unix:"  # what grpc.aio reports for a Unix socket caller (measured: test_tls.py)
GATEWAY_SUBJECT = "CN=gateway.example,O=Example"

POLICY = f"""
[principals.local-admin]
roles = ["admin"]

[principals.gateway]
roles = ["customer-service", "analyst"]
token_sha256 = ["{hashlib.sha256(STATIC_TOKEN.encode()).hexdigest()}"]
certificate_subjects = ["{GATEWAY_SUBJECT}"]
"""


@dataclass(frozen=True)
class Keys:
    rsa_private: rsa.RSAPrivateKey
    ec_private: ec.EllipticCurvePrivateKey

    def public_pem(self, algorithm: str) -> bytes:
        key = self.rsa_private if algorithm == "RS256" else self.ec_private
        public = key.public_key()
        return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def signing_key(self, algorithm: str) -> Any:
        return {"HS256": SECRET, "RS256": self.rsa_private, "ES256": self.ec_private}[algorithm]


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP256R1()))


def make_policy(tmp_path: Path, auth: str = "", policy: str = POLICY) -> PolicyConfig:
    config = tmp_path / "sandboxd.toml"
    top = TomlTable(tomllib.loads(f"[auth]\n{auth}\n{policy}"), file=config)
    result = parse_policy(top)
    top.finish()
    return result


def jwt_authenticator(tmp_path: Path, keys: Keys, algorithm: str = "HS256", extra: str = "") -> Authenticator:
    key_file = tmp_path / "jwt.key"
    key_file.write_bytes(SECRET + b"\n" if algorithm == "HS256" else keys.public_pem(algorithm))
    key_file.chmod(0o600)
    auth = f'jwt_key_file = "{key_file}"\njwt_issuer = "{ISSUER}"\njwt_audience = "{AUDIENCE}"\n{extra}'
    return Authenticator.from_config(make_policy(tmp_path, auth))


def token(keys: Keys, algorithm: str = "HS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "agent-7", "roles": ["analyst"], "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, keys.signing_key(algorithm), algorithm=algorithm)


def bearer(value: str) -> list[tuple[str, str | bytes]]:
    return [("authorization", f"Bearer {value}")]


def authenticate(
    authenticator: Authenticator,
    metadata: Sequence[tuple[str, str | bytes]] = (),
    *,
    peer: str = TCP_PEER,
    auth_context: Mapping[str, Sequence[bytes]] | None = None,
) -> Identity:
    return authenticator.authenticate(metadata=metadata, peer=peer, auth_context=auth_context or {})


def refusal(authenticator: Authenticator, metadata: Sequence[tuple[str, str | bytes]] = (), **kwargs: Any) -> str:
    with pytest.raises(AuthFailed) as caught:
        authenticate(authenticator, metadata, **kwargs)
    assert caught.value.reason == "AUTH_FAILED"
    message = caught.value.message
    for _, value in metadata:  # the credential itself never appears in the message
        secret = value.decode(errors="replace") if isinstance(value, bytes) else value
        secret = secret.removeprefix("Bearer ").strip()
        if len(secret) > 8:
            assert secret not in message and secret[-16:] not in message, message
    return message


# -- the Unix socket ---------------------------------------------------------------------------------------


def test_the_socket_is_local_admin_by_default(tmp_path: Path) -> None:
    authenticator = Authenticator.from_config(make_policy(tmp_path))
    assert authenticate(authenticator, peer=SOCKET_PEER) == Identity("local-admin", ("admin",), "unix-socket")
    assert authenticate(authenticator, peer="unix:/run/sandboxd/sandboxd.sock").principal == "local-admin"


def test_the_socket_may_be_another_principal(tmp_path: Path) -> None:
    authenticator = Authenticator.from_config(make_policy(tmp_path, 'unix_socket_principal = "gateway"'))
    identity = authenticate(authenticator, peer=SOCKET_PEER)
    assert identity == Identity("gateway", ("customer-service", "analyst"), "unix-socket")


def test_the_socket_may_require_a_token(tmp_path: Path) -> None:
    authenticator = Authenticator.from_config(make_policy(tmp_path, 'unix_socket_principal = ""'))
    assert "must present a bearer token" in refusal(authenticator, peer=SOCKET_PEER)
    identity = authenticate(authenticator, bearer(STATIC_TOKEN), peer=SOCKET_PEER)
    assert identity == Identity("gateway", ("customer-service", "analyst"), "static-token")


def test_a_token_on_the_socket_wins_and_a_bad_one_is_no_fallback(tmp_path: Path) -> None:
    authenticator = Authenticator.from_config(make_policy(tmp_path))
    assert authenticate(authenticator, bearer(STATIC_TOKEN), peer=SOCKET_PEER).principal == "gateway"
    message = refusal(authenticator, bearer("not-the-static-token"), peer=SOCKET_PEER)
    assert "no principal's static token" in message


# -- static tokens and the authorization metadata -------------------------------------------------------------


def test_static_token_hit_and_miss(tmp_path: Path) -> None:
    authenticator = Authenticator.from_config(make_policy(tmp_path))
    assert authenticate(authenticator, bearer(STATIC_TOKEN)) == Identity(
        "gateway", ("customer-service", "analyst"), "static-token"
    )
    assert authenticate(authenticator, [("authorization", f"bearer  {STATIC_TOKEN} ".encode())]).principal == "gateway"
    assert "no principal's static token" in refusal(authenticator, bearer(STATIC_TOKEN + "x"))
    assert "no principal's static token" in refusal(authenticator, bearer(STATIC_TOKEN.upper()))


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ([("authorization", f"Basic {STATIC_TOKEN}")], "must be 'Bearer <token>'"),
        ([("authorization", "Bearer")], "must be 'Bearer <token>'"),
        ([("authorization", f"Bearer {STATIC_TOKEN} extra-bits")], "must be 'Bearer <token>'"),
        ([("authorization", f"Bearer {STATIC_TOKEN}"), ("authorization", "Bearer other")], "more than one"),
        ([("authorization", b"Bearer \xff\xfe-not-ascii-token")], "not ASCII"),
    ],
)
def test_malformed_authorization_is_refused(
    tmp_path: Path, metadata: list[tuple[str, str | bytes]], says: str
) -> None:
    authenticator = Authenticator.from_config(make_policy(tmp_path))
    assert says in refusal(authenticator, metadata, peer=SOCKET_PEER)


def test_tcp_without_credentials_is_refused(tmp_path: Path) -> None:
    authenticator = Authenticator.from_config(make_policy(tmp_path))
    assert refusal(authenticator).startswith("no credentials")
    insecure = {"transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]}
    assert refusal(authenticator, auth_context=insecure).startswith("no credentials")
    tls_without_client_cert = {"transport_security_type": [b"ssl"], "ssl_tls_version": [b"TLSv1.3"]}
    assert refusal(authenticator, auth_context=tls_without_client_cert).startswith("no credentials")
    other_metadata = [("x-request-id", "abc")]
    assert refusal(authenticator, other_metadata).startswith("no credentials")


# -- client certificates (the auth context as grpc.aio gives it) ---------------------------------------------------


def client_cert_pem(subject: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string(subject)
    now = time.time()
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime.fromtimestamp(now - 60, datetime.UTC))
        .not_valid_after(datetime.datetime.fromtimestamp(now + 60, datetime.UTC))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def tls_context(subject: str) -> dict[str, list[bytes]]:
    return {"transport_security_type": [b"ssl"], "x509_subject": [b"(gRPC's own spelling, not used)"],
            "x509_pem_cert": [client_cert_pem(subject)]}


def test_a_mapped_certificate_subject(tmp_path: Path) -> None:
    authenticator = Authenticator.from_config(make_policy(tmp_path))
    identity = authenticate(authenticator, auth_context=tls_context(GATEWAY_SUBJECT))
    assert identity == Identity("gateway", ("customer-service", "analyst"), "mtls")
    # a token on top of the certificate takes precedence, as on the socket
    assert authenticate(authenticator, bearer(STATIC_TOKEN), auth_context=tls_context("CN=x")).method == "static-token"


def test_an_unmapped_certificate_subject(tmp_path: Path) -> None:
    authenticator = Authenticator.from_config(make_policy(tmp_path))
    message = refusal(authenticator, auth_context=tls_context("CN=gateway.example,O=Other"))
    assert message == ("the client certificate's subject 'CN=gateway.example,O=Other' is no principal's "
                       "(principals.*.certificate_subjects)")
    assert "no principal's" in refusal(authenticator, auth_context=tls_context("CN=gateway.example"))


def test_an_unparsable_certificate_is_refused(tmp_path: Path) -> None:
    authenticator = Authenticator.from_config(make_policy(tmp_path))
    context = {"transport_security_type": [b"ssl"], "x509_pem_cert": [b"-----BEGIN CERTIFICATE-----\nxx\n"]}
    assert "cannot be parsed" in refusal(authenticator, auth_context=context)


# -- JWTs ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "ES256"])
def test_a_good_jwt(tmp_path: Path, keys: Keys, algorithm: str) -> None:
    authenticator = jwt_authenticator(tmp_path, keys, algorithm)
    identity = authenticate(authenticator, bearer(token(keys, algorithm)))
    assert identity == Identity("jwt:agent-7", ("analyst",), "jwt")  # kept apart from configured principals
    with_list_audience = token(keys, algorithm, aud=["other", AUDIENCE], roles=["admin", "analyst", "admin"])
    assert authenticate(authenticator, bearer(with_list_audience)).roles == ("admin", "analyst")


def test_jwt_roles_are_the_claim_exactly(tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    authenticator = jwt_authenticator(tmp_path, keys)
    # sub names a configured principal: its configured roles are not added
    assert authenticate(authenticator, bearer(token(keys, sub="gateway", roles=None))).roles == ()
    with caplog.at_level(logging.WARNING, logger="sandboxd"):
        identity = authenticate(authenticator, bearer(token(keys, roles=["superuser", "analyst"])))
        authenticate(authenticator, bearer(token(keys, roles=["superuser"])))
    assert identity.roles == ("analyst",)
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == ["a JWT (sub 'agent-7') names role 'superuser', which is not configured: it grants nothing"]


def test_leeway_forgives_a_little_clock_skew(tmp_path: Path, keys: Keys) -> None:
    authenticator = jwt_authenticator(tmp_path, keys, extra='jwt_leeway = "30s"')
    now = int(time.time())
    assert authenticate(authenticator, bearer(token(keys, exp=now - 10))).principal == "jwt:agent-7"
    assert authenticate(authenticator, bearer(token(keys, nbf=now + 10))).principal == "jwt:agent-7"
    assert "expired" in refusal(authenticator, bearer(token(keys, exp=now - 60)))


def jwt_refusals(keys: Keys, other_ec: ec.EllipticCurvePrivateKey) -> Iterator[tuple[str, str, str]]:
    """(name, token, what the message says) for the HS256 authenticator."""
    now = int(time.time())
    yield "wrong secret", jwt.encode({"sub": "x"}, b"another-secret-of-32-bytes-or-more!!", "HS256"), "bad signature"
    yield "expired", token(keys, exp=now - 3600), "expired"
    yield "nbf in the future", token(keys, nbf=now + 3600), "not valid yet"
    yield "iat in the future", token(keys, iat=now + 3600), "not valid yet"
    yield "wrong audience", token(keys, aud="someone-else"), "wrong audience (aud must include 'sandboxd')"
    yield "wrong issuer", token(keys, iss="https://evil.example"), "wrong issuer (iss must be 'https://gateway.example')"
    yield "no sub", token(keys, sub=None), "no 'sub' claim"
    yield "empty sub", token(keys, sub=""), "sub must be a name"
    yield "no exp", token(keys, exp=None), "no 'exp' claim"
    yield "no aud", token(keys, aud=None), "no 'aud' claim"
    yield "no iss", token(keys, iss=None), "no 'iss' claim"
    yield "roles not a list", token(keys, roles="admin"), "roles claim must be a list of strings"
    yield "roles of numbers", token(keys, roles=[1, 2]), "roles claim must be a list of strings"
    unsigned = jwt.encode({"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 60}, None, algorithm="none")
    yield "alg none", unsigned, "its algorithm is not HS256"
    yield "ES256 token", jwt.encode({"sub": "x"}, other_ec, "ES256"), "its algorithm is not HS256"
    good = token(keys)
    header, payload, signature = good.split(".")
    yield "tampered payload", f"{header}.{payload[:-2]}xx.{signature}", "JWT refused"
    yield "garbage", "abc.def.ghi", "malformed"


def test_bad_jwts_are_refused(tmp_path: Path, keys: Keys) -> None:
    authenticator = jwt_authenticator(tmp_path, keys)
    for name, bad, says in jwt_refusals(keys, ec.generate_private_key(ec.SECP256R1())):
        message = refusal(authenticator, bearer(bad))
        assert message.startswith("JWT refused") and says in message, (name, message)


def test_hs256_signed_with_the_public_key_is_refused_by_an_rs256_daemon(tmp_path: Path, keys: Keys) -> None:
    """The classic confusion: the attacker knows the public key and uses it as an HMAC secret."""
    authenticator = jwt_authenticator(tmp_path, keys, "RS256")
    now = int(time.time())
    claims = {"sub": "attacker", "roles": ["admin"], "iss": ISSUER, "aud": AUDIENCE, "exp": now + 60}

    def b64(data: bytes) -> str:
        return urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(keys.public_pem("RS256"), signing_input.encode(), "sha256").digest()
    forged = f"{signing_input}.{b64(mac)}"
    assert "its algorithm is not RS256" in refusal(authenticator, bearer(forged))
    assert "its algorithm is not RS256" in refusal(authenticator, bearer(token(keys, "HS256")))


def test_a_non_jwt_token_with_jwts_configured(tmp_path: Path, keys: Keys) -> None:
    authenticator = jwt_authenticator(tmp_path, keys)
    assert "neither a JWT nor a principal's static token" in refusal(authenticator, bearer("plain-unknown-token"))
    assert authenticate(authenticator, bearer(STATIC_TOKEN)).method == "static-token"


# -- key files -----------------------------------------------------------------------------------------------


def key_file_error(tmp_path: Path, content: bytes | None, extra: str = "") -> str:
    key_file = tmp_path / "jwt.key"
    if content is not None:
        key_file.write_bytes(content)
    auth = f'jwt_key_file = "{key_file}"\njwt_issuer = "{ISSUER}"\njwt_audience = "{AUDIENCE}"\n{extra}'
    policy = make_policy(tmp_path, auth)
    with pytest.raises(ConfigError) as caught:
        Authenticator.from_config(policy)
    return caught.value.message


def test_bad_key_files_name_the_config_the_key_and_the_file(tmp_path: Path, keys: Keys) -> None:
    prefix = f"{tmp_path / 'sandboxd.toml'}: auth.jwt_key_file: {tmp_path / 'jwt.key'}: "
    weak_rsa = rsa.generate_private_key(65537, 1024).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    private = keys.rsa_private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cases = [
        (None, "cannot read: No such file or directory"),
        (b"short secret\n", "an HS256 secret of 12 bytes is too short (at least 32"),
        (b"-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n", "not a PEM public key"),
        (private, "holds a private key: give sandboxd only the issuer's public key"),
        (weak_rsa, "an RSA key of 1024 bits is too weak"),
        (p384, "RS256 needs an RSA key, ES256 an EC P-256 key"),
    ]
    for content, says in cases:
        message = key_file_error(tmp_path, content)
        assert message.startswith(prefix) and says in message, message
        (tmp_path / "jwt.key").unlink(missing_ok=True)


def test_the_algorithms_must_be_the_keys(tmp_path: Path, keys: Keys) -> None:
    message = key_file_error(tmp_path, keys.public_pem("RS256"), 'jwt_algorithms = ["HS256"]')
    assert message.startswith(f"{tmp_path / 'sandboxd.toml'}: auth.jwt_algorithms: HS256 cannot be verified with ")
    assert "a key for RS256" in message
    (tmp_path / "jwt.key").write_bytes(keys.public_pem("ES256"))
    assert load_jwt_key(tmp_path / "jwt.key").algorithm == "ES256"


def test_an_hs256_secret_drops_one_newline_and_warns_when_world_readable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / "jwt.key"
    key_file.write_bytes(SECRET + b"\n")
    key_file.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="sandboxd"):
        assert load_jwt_key(key_file).key == SECRET
    assert not caplog.records
    key_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="sandboxd"):
        load_jwt_key(key_file)
    assert "readable by every user" in caplog.text
    assert SECRET.decode() not in caplog.text and SECRET.decode() not in repr(load_jwt_key(key_file))


def test_a_jwt_subject_never_names_a_configured_principal(tmp_path: Path) -> None:
    # sub "local-admin" is the issuer's name for someone: it must not act as the socket's admin
    with pytest.raises(ConfigError, match=r"'jwt:alice': names starting 'jwt:' are JWT subjects'"):
        make_policy(tmp_path, policy='[principals."jwt:alice"]\nroles = ["admin"]\n')
