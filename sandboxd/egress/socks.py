"""The SOCKS side of the proxy's one port: SOCKS5 (RFC 1928) without authentication, CONNECT only.

::

    client                                    proxy
    05 NMETHODS METHODS...             -->
                                       <--    05 00        no authentication (05 FF and close: none offered)
    05 CMD 00 ATYP DST.ADDR DST.PORT   -->                 ATYP 01 IPv4, 03 name (length byte first), 04 IPv6
                                       <--    05 REP 00 ATYP BND.ADDR BND.PORT
    ... the tunnel, when REP is 00 ...

BIND and UDP ASSOCIATE are answered 07 (command not supported: the proxy carries TCP only), an unknown
ATYP 08. A SOCKS4 client — first byte 04 — gets SOCKS4's "rejected" (5B) and the connection closes.
Refusals of a named target use the codes of :class:`~sandboxd.egress.target.Kind`.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from sandboxd.egress.inbox import Inbox
from sandboxd.egress.target import Asked, HandshakeFailed, Refused

VERSION = 0x05
NO_AUTHENTICATION = 0x00
NO_ACCEPTABLE_METHOD = 0xFF
CMD_CONNECT = 0x01
ATYP_IPV4 = 0x01
ATYP_NAME = 0x03
ATYP_IPV6 = 0x04
REPLY_SUCCEEDED = 0x00
REPLY_GENERAL_FAILURE = 0x01
REPLY_COMMAND_NOT_SUPPORTED = 0x07
REPLY_ADDRESS_TYPE_NOT_SUPPORTED = 0x08
SOCKS4_REJECTED = bytes([0x00, 0x5B, 0, 0, 0, 0, 0, 0])  # VN 0, CD 91 "request rejected or failed"


def reply(code: int, bound: tuple[str, int] | None = None) -> bytes:
    """A SOCKS5 reply; ``bound`` is the proxy's end of the upstream connection (0.0.0.0:0 when none)."""
    host, port = bound or ("0.0.0.0", 0)
    try:
        packed, atyp = socket.inet_pton(socket.AF_INET6, host), ATYP_IPV6
    except OSError:
        packed, atyp = socket.inet_pton(socket.AF_INET, host), ATYP_IPV4
    return bytes([VERSION, code, 0x00, atyp]) + packed + struct.pack("!H", port)


@dataclass(frozen=True)
class SocksRequest:
    asked: Asked

    def refusal_reply(self, refused: Refused) -> bytes:
        return reply(refused.kind.socks_reply)

    def established_reply(self, bound: tuple[str, int]) -> bytes:
        return reply(REPLY_SUCCEEDED, bound)


async def read_socks5(inbox: Inbox) -> SocksRequest:
    """Negotiate and read one request; :class:`HandshakeFailed` with the reply for anything but a CONNECT."""
    version, method_count = await inbox.read_exactly(2)
    if version != VERSION:
        raise HandshakeFailed(f"SOCKS version {version} is not supported")
    methods = await inbox.read_exactly(method_count)
    if NO_AUTHENTICATION not in methods:
        raise HandshakeFailed("the SOCKS5 client offered no method without authentication",
                              bytes([VERSION, NO_ACCEPTABLE_METHOD]))
    inbox.write(bytes([VERSION, NO_AUTHENTICATION]))
    version, command, _reserved, atyp = await inbox.read_exactly(4)
    if version != VERSION:
        raise HandshakeFailed(f"a SOCKS5 request with version {version}", reply(REPLY_GENERAL_FAILURE))
    if atyp == ATYP_IPV4:
        host = str(IPv4Address(await inbox.read_exactly(4)))
    elif atyp == ATYP_IPV6:
        host = str(IPv6Address(await inbox.read_exactly(16)))
    elif atyp == ATYP_NAME:
        (length,) = await inbox.read_exactly(1)
        raw = await inbox.read_exactly(length)
        try:
            host = raw.decode("ascii")
        except UnicodeDecodeError:
            raise HandshakeFailed("a SOCKS5 host name that is not ASCII", reply(REPLY_GENERAL_FAILURE)) from None
    else:
        raise HandshakeFailed(f"SOCKS5 address type {atyp} is not supported",
                              reply(REPLY_ADDRESS_TYPE_NOT_SUPPORTED))
    (port,) = struct.unpack("!H", await inbox.read_exactly(2))
    if command != CMD_CONNECT:
        raise HandshakeFailed(f"SOCKS5 command {command} is not supported (only CONNECT: the proxy carries TCP)",
                              reply(REPLY_COMMAND_NOT_SUPPORTED))
    try:
        asked = Asked.parse("socks5", host, port)
    except ValueError as exc:
        raise HandshakeFailed(f"a malformed SOCKS5 target: {exc}", reply(REPLY_GENERAL_FAILURE)) from None
    return SocksRequest(asked)
