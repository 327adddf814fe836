"""Who is calling: the credentials a gRPC call carries, handed to the :class:`~sandboxd.policy.auth.Authenticator`.

The transport decides what counts: a caller on the Unix socket (``peer`` ``unix:…``) passed the socket's
mode and group; a caller on TCP brings a bearer token or a client certificate the TLS handshake verified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

from sandboxd.policy.auth import Authenticator, Identity


def _metadata(context: grpc.aio.ServicerContext) -> Sequence[tuple[str, str | bytes]]:
    return tuple((item[0], item[1]) for item in context.invocation_metadata() or ())


def _auth_context(context: grpc.aio.ServicerContext) -> Mapping[str, Sequence[bytes]]:
    try:
        return context.auth_context() or {}
    except (AttributeError, ValueError):  # an insecure transport has no auth context to speak of
        return {}


def peer_of(context: grpc.aio.ServicerContext) -> str:
    return str(context.peer() or "")


def identify(context: grpc.aio.ServicerContext, authenticator: Authenticator) -> Identity:
    """The caller's identity; raises :class:`~sandboxd.policy.auth.AuthFailed` when it has none we accept."""
    return authenticator.authenticate(
        metadata=_metadata(context), peer=peer_of(context), auth_context=_auth_context(context)
    )
