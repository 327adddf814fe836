"""Who is calling: from a call's metadata, peer and TLS auth context to an :class:`Identity` — or AUTH_FAILED.

The credentials, in the order they are looked at::

    authorization: Bearer <token>   a static token whose SHA-256 is a principal's token_sha256 ("static-token"),
                                    else a JWT verified against auth.jwt_key_file ("jwt"); a token that is
                                    neither is refused — never a fallback to the transport's identity
    peer "unix:…"                   the socket's principal, auth.unix_socket_principal ("unix-socket")
    a verified client certificate   the principal whose certificate_subjects has its subject ("mtls")

What grpc.aio's ``context.auth_context()`` holds (measured with grpcio 1.85, see tests/unit/test_tls.py):
for a TLS call with a verified client certificate ``transport_security_type = [b"ssl"]``,
``x509_subject``, ``x509_common_name``, ``x509_pem_cert`` (the leaf, PEM), ``security_level``,
``ssl_tls_version`` …; without a client certificate no ``x509_*`` key at all; on the Unix socket
``transport_security_type = [b"insecure"]`` and the peer is ``"unix:"``. gRPC prints ``x509_subject`` with
OpenSSL's own escaping (UTF-8 as ``\\C3\\BC``, ``emailAddress=``, multi-valued RDNs reordered), so the
subject is read from ``x509_pem_cert`` and compared as a parsed name, not as text.

A JWT's principal is ``jwt:`` and its ``sub`` and its roles are its ``roles`` claim (a list of strings) — exactly those:
the issuer holding the key is trusted with both. ``exp``, ``iss``, ``aud`` and ``sub`` are required; ``nbf``
and ``iat`` are checked when present; all within ``auth.jwt_leeway``. The algorithm is the key's (no
``none``, and a token signed HS256 is not verified with an RSA public key taken as an HMAC secret).

Error messages say what was wrong and never contain the token.
"""

from __future__ import annotations

import hashlib
import logging
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sandboxd.base.errors import ConfigError
from sandboxd.base.refusals import AuthFailed
from sandboxd.policy.config import JWT_PRINCIPAL_PREFIX, PolicyConfig, subject_name, subject_string

__all__ = ["AuthFailed", "Authenticator", "Identity", "JwtKey", "load_jwt_key"]

log = logging.getLogger("sandboxd")

Method = Literal["unix-socket", "static-token", "jwt", "mtls"]

MIN_HMAC_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
_MAX_SUBJECT_CHARS = 256
_MAX_WARNED_ROLES = 256


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: its principal, its roles in order, and how it proved who it is. ``claims``: a
    JWT's verified claims (what a role's ``require_claims`` is checked against); empty for other methods."""

    principal: str
    roles: tuple[str, ...]
    method: Method
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class JwtKey:
    """The key JWTs are verified with: an HMAC secret (HS256) or a public key (RS256, ES256)."""

    algorithm: str
    key: bytes | rsa.RSAPublicKey | ec.EllipticCurvePublicKey = field(repr=False)


def load_jwt_key(path: Path) -> JwtKey:
    """A PEM public key (RSA >= 2048 bits → RS256, EC P-256 → ES256) or else an HMAC secret of at least 32
    bytes (HS256; one trailing newline is not part of it). Raises ValueError saying what is wrong."""
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror}") from None
    if b"-----BEGIN" in data:
        if b"PRIVATE KEY-----" in data:
            raise ValueError("holds a private key: give sandboxd only the issuer's public key")
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"not a PEM public key ({exc})") from None
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < MIN_RSA_BITS:
                raise ValueError(f"an RSA key of {key.key_size} bits is too weak (at least {MIN_RSA_BITS})")
            return JwtKey("RS256", key)
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            return JwtKey("ES256", key)
        raise ValueError(f"a {type(key).__name__.lstrip('_')}: RS256 needs an RSA key, ES256 an EC P-256 key")
    secret = data.removesuffix(b"\n").removesuffix(b"\r")
    if len(secret) < MIN_HMAC_SECRET_BYTES:
        raise ValueError(
            f"an HS256 secret of {len(secret)} bytes is too short (at least {MIN_HMAC_SECRET_BYTES}, e.g. "
            f"`head -c 48 /dev/urandom | base64`)"
        )
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        log.warning("%s: the HS256 secret is readable by every user of this host, who can then mint any "
                    "principal's token: chmod o-rw it", path)
    return JwtKey("HS256", secret)


def _bearer_token(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    values = [value for key, value in metadata if key.lower() == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise AuthFailed("the call carries more than one authorization metadata entry")
    value = values[0]
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise AuthFailed("the authorization metadata is not ASCII") from None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(char.isspace() for char in token):
        raise AuthFailed("the authorization metadata must be 'Bearer <token>'")
    return token


def _client_certificate_subject(auth_context: Mapping[str, Sequence[bytes]]) -> x509.Name | None:
    """The subject of the client certificate the TLS handshake verified, None when there is none."""
    if list(auth_context.get("transport_security_type", ())) != [b"ssl"]:
        return None
    pems = list(auth_context.get("x509_pem_cert", ()))
    if not pems:
        return None
    try:
        return x509.load_pem_x509_certificate(pems[0]).subject
    except ValueError:
        raise AuthFailed("the client certificate cannot be parsed") from None


class Authenticator:
    def __init__(self, policy: PolicyConfig, jwt_key: JwtKey | None = None) -> None:
        self._policy = policy
        self._auth = policy.auth
        self._jwt_key = jwt_key
        self._by_token = {digest: p.name for p in policy.principals.values() for digest in p.token_sha256}
        self._by_subject = {
            subject_name(subject): p.name for p in policy.principals.values() for subject in p.certificate_subjects
        }
        self._warned_roles: set[str] = set()

    @classmethod
    def from_config(cls, policy: PolicyConfig) -> Authenticator:
        """Load ``auth.jwt_key_file``; ConfigError naming the file and the key when it is unusable."""
        path = policy.auth.jwt_key_file
        if path is None:
            return cls(policy)
        try:
            key = load_jwt_key(path)
        except ValueError as exc:
            raise ConfigError(f"{policy.source}: auth.jwt_key_file: {path}: {exc}") from None
        for algorithm in policy.auth.jwt_algorithms:
            if algorithm != key.algorithm:
                raise ConfigError(
                    f"{policy.source}: auth.jwt_algorithms: {algorithm} cannot be verified with {path}, a key "
                    f"for {key.algorithm} (one key verifies one algorithm; leave jwt_algorithms out to use the key's)"
                )
        return cls(policy, key)

    def authenticate(
        self,
        *,
        metadata: Sequence[tuple[str, str | bytes]],
        peer: str,
        auth_context: Mapping[str, Sequence[bytes]],
    ) -> Identity:
        """The caller's identity; raises :class:`AuthFailed` saying what was missing or wrong."""
        token = _bearer_token(metadata)
        if token is not None:
            return self._token_identity(token)
        if peer.startswith("unix:"):
            principal = self._auth.unix_socket_principal
            if not principal:
                raise AuthFailed(
                    "callers on the Unix socket must present a bearer token (auth.unix_socket_principal is \"\")"
                )
            return self._configured(principal, "unix-socket")
        subject = _client_certificate_subject(auth_context)
        if subject is not None:
            mapped = self._by_subject.get(subject)
            if mapped is None:
                raise AuthFailed(
                    f"the client certificate's subject {subject_string(subject)!r} is no principal's "
                    f"(principals.*.certificate_subjects)"
                )
            return self._configured(mapped, "mtls")
        raise AuthFailed("no credentials: send 'authorization: Bearer <token>' or connect with a client certificate")

    def _configured(self, name: str, method: Method) -> Identity:
        principal = self._policy.principals.get(name)
        if principal is None:  # check_policy refuses such a config; never grant by a dangling name
            raise AuthFailed(f"principal {name!r} is not configured")
        return Identity(name, principal.roles, method)

    def _token_identity(self, token: str) -> Identity:
        principal = self._by_token.get(hashlib.sha256(token.encode()).hexdigest())
        if principal is not None:
            return self._configured(principal, "static-token")
        if self._jwt_key is None:
            raise AuthFailed("the bearer token is no principal's static token (and JWTs are not configured)")
        if token.count(".") != 2:
            raise AuthFailed("the bearer token is neither a JWT nor a principal's static token")
        return self._jwt_identity(token, self._jwt_key)

    def _jwt_identity(self, token: str, key: JwtKey) -> Identity:
        auth = self._auth
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=auth.jwt_audience,
                issuer=auth.jwt_issuer,
                leeway=auth.jwt_leeway_ms / 1000,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidAlgorithmError:
            raise AuthFailed(f"JWT refused: its algorithm is not {key.algorithm}") from None
        except jwt.InvalidSignatureError:
            raise AuthFailed("JWT refused: bad signature (not signed with the key of auth.jwt_key_file)") from None
        except jwt.ExpiredSignatureError:
            raise AuthFailed("JWT refused: expired (exp is past)") from None
        except jwt.ImmatureSignatureError:
            raise AuthFailed("JWT refused: not valid yet (nbf or iat is in the future)") from None
        except jwt.InvalidAudienceError:
            raise AuthFailed(f"JWT refused: wrong audience (aud must include {auth.jwt_audience!r})") from None
        except jwt.InvalidIssuerError:
            raise AuthFailed(f"JWT refused: wrong issuer (iss must be {auth.jwt_issuer!r})") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthFailed(f"JWT refused: no {exc.claim!r} claim") from None
        except jwt.DecodeError:
            raise AuthFailed("JWT refused: malformed") from None
        except jwt.InvalidTokenError as exc:  # a claim of the wrong type, e.g. a numeric sub
            raise AuthFailed(f"JWT refused: {type(exc).__name__}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip() or len(subject) > _MAX_SUBJECT_CHARS:
            raise AuthFailed(f"JWT refused: sub must be a name of 1 to {_MAX_SUBJECT_CHARS} characters")
        if not subject.isprintable():
            raise AuthFailed("JWT refused: sub has unprintable characters")
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise AuthFailed("JWT refused: the roles claim must be a list of strings")
        known = tuple(dict.fromkeys(role for role in roles if role in self._policy.roles))
        for role in roles:
            if role not in self._policy.roles:
                self._warn_unknown_role(subject, role)
        return Identity(JWT_PRINCIPAL_PREFIX + subject, known, "jwt", MappingProxyType(claims))

    def _warn_unknown_role(self, subject: str, role: str) -> None:
        if role in self._warned_roles or len(self._warned_roles) >= _MAX_WARNED_ROLES:
            return
        self._warned_roles.add(role)
        log.warning("a JWT (sub %r) names role %r, which is not configured: it grants nothing", subject, role[:64])
