"""Which hosts and ports an execution's connections may name: the allowlist, parsed once, matched per connection.

One string per entry, as tool files and roles write them::

    api.example.com              the name, any port
    api.example.com:443          the name, port 443 only
    *.wikipedia.org:443          any name *below* wikipedia.org (one or more labels), not wikipedia.org itself
    203.0.113.7   203.0.113.7:443          an IPv4 address
    10.0.0.0/8    10.0.0.0/8:5432          an IPv4 network
    2001:db8::1   2001:db8::/32            an IPv6 address or network, any port
    [2001:db8::1]:443   [fd00::/8]:443     the same with a port (the brackets keep the colons apart)

Names are compared case-insensitively without a trailing dot. A name entry matches only a *name* asked for
and an address entry only an *address literal* asked for: ``api.example.com`` does not let a client reach its
addresses by number, and ``10.0.0.0/8`` says nothing about which names resolve there. An address entry is
*explicit* (:attr:`AllowEntry.explicit_address`): it may reach inward addresses — loopback, private
networks — that a name is refused (see :mod:`sandboxd.egress.addresses`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

MAX_NAME_CHARS = 253
MAX_LABEL_CHARS = 63

# A DNS label as hosts spell them (RFC 1123 "LDH"): letters, digits and inner hyphens.
_LDH_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
# What a client may *ask* for: looser than an entry (an underscore is no reason to answer 400 rather than
# "not on the allowlist"), but never spaces, slashes, '@' or anything else a URL parser might split on.
_ASKED_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
_PORT = re.compile(r"^[0-9]{1,5}$")


def _entry_error(text: str, what: str) -> ValueError:
    return ValueError(f"egress allowlist entry {text!r}: {what}")


def _parse_port(text: str, port_text: str) -> int:
    if not _PORT.match(port_text):
        raise _entry_error(text, f"port {port_text!r} is not a number from 1 to 65535")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise _entry_error(text, f"port {port} is outside 1-65535")
    return port


def _parse_network(text: str, spelled: str, version: int) -> Network:
    try:
        if version == 6:
            network: Network = IPv6Network(spelled, strict=True)
        else:
            network = IPv4Network(spelled, strict=True)
    except ValueError as exc:
        raise _entry_error(text, f"{spelled!r} is not an IPv{version} address or network ({exc})") from None
    if isinstance(network, IPv6Network) and network.network_address.scope_id is not None:
        raise _entry_error(text, "a scoped IPv6 address (with %zone) cannot be allowed")
    return network


def _parse_name(text: str, spelled: str) -> str:
    name = spelled.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise _entry_error(text, "no host name")
    if len(name) > MAX_NAME_CHARS:
        raise _entry_error(text, f"the name is {len(name)} characters long, more than DNS allows ({MAX_NAME_CHARS})")
    labels = name.split(".")
    if labels[0] == "*":
        if len(labels) == 1:
            raise _entry_error(text, "'*' alone would allow every name: write '*.example.com' for the names below one")
        labels = labels[1:]
    for label in labels:
        if label == "":
            raise _entry_error(text, "an empty label (two dots in a row, or a leading dot)")
        if "*" in label:
            raise _entry_error(text, "'*' may only be a whole leftmost label, as in '*.example.com'")
        if len(label) > MAX_LABEL_CHARS:
            raise _entry_error(text, f"label {label[:16]!r}… is longer than {MAX_LABEL_CHARS} characters")
        if not _LDH_LABEL.match(label):
            raise _entry_error(text, f"label {label!r} is not a host name label (letters, digits, inner hyphens)")
    if labels[-1].isdigit():
        # "1.2.3" or "10.0.0.300": resolvers read such names as (odd) IPv4 literals, never as DNS names.
        raise _entry_error(text, "not a valid IPv4 address, and a name cannot end in a numeric label")
    return name


@dataclass(frozen=True)
class AllowEntry:
    """One parsed entry; build it with :func:`parse_entry`."""

    text: str  # as written
    host: str | None  # lower-case name without trailing dot; a wildcard keeps its "*." prefix
    network: IPv4Network | IPv6Network | None  # for address and network entries
    port: int | None  # None = any port

    @property
    def explicit_address(self) -> bool:
        """An address or network entry: what it names may be inward (loopback, private …) and still be reached."""
        return self.network is not None

    def matches(self, host: str, port: int) -> bool:
        """Whether a client asking for ``host:port`` (a name or an address literal, as asked) is let through."""
        try:
            name, address = normalize_host(host)
        except ValueError:
            return False
        return self._matches(name, address, port)

    def _matches(self, name: str, address: Address | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if address is not None:
            return self.network is not None and address.version == self.network.version and address in self.network
        if self.host is None:
            return False
        if self.host.startswith("*."):
            # "*" is one or more whole labels: the suffix must follow a dot, and something must precede it.
            return name.endswith(self.host[1:]) and len(name) > len(self.host) - 1
        return name == self.host


def parse_entry(text: str) -> AllowEntry:
    """Parse one entry; a :class:`ValueError` quotes it and says what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"egress allowlist entry {text!r}: expected a string")
    if text == "" or text.strip() != text or any(ch.isspace() for ch in text):
        raise _entry_error(text, "empty, or contains whitespace")
    if not text.isascii() or not text.isprintable():
        raise _entry_error(text, "not printable ASCII (write international names in their xn-- form)")
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise _entry_error(text, "'[' without its ']'")
        if rest and not rest.startswith(":"):
            raise _entry_error(text, f"expected ':PORT' after ']', got {rest!r}")
        port = _parse_port(text, rest[1:]) if rest else None
        return AllowEntry(text, None, _parse_network(text, inside, 6), port)
    if text.count(":") >= 2:  # a bare IPv6 address or network: no port (it would be ambiguous)
        return AllowEntry(text, None, _parse_network(text, text, 6), None)
    spelled, colon, port_text = text.partition(":")
    port = _parse_port(text, port_text) if colon else None
    if "/" in spelled:
        return AllowEntry(text, None, _parse_network(text, spelled, 4), port)
    if spelled.replace(".", "").isdigit():
        return AllowEntry(text, None, _parse_network(text, spelled, 4), port)
    return AllowEntry(text, _parse_name(text, spelled), None, port)


def normalize_host(host: str) -> tuple[str, Address | None]:
    """A host as a client asked for it → (lower-case name without trailing dot or brackets, its address when
    it is an address literal). A :class:`ValueError` says why it cannot be a host at all."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in text:
        try:
            address = IPv6Address(text)
        except ValueError:
            raise ValueError(f"{host[:64]!r} is not an IPv6 address") from None
        if address.scope_id is not None:
            raise ValueError(f"{host[:64]!r} is a scoped IPv6 address")
        return str(address), address
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"{host[:64]!r} is not a host name (empty or over {MAX_NAME_CHARS} characters)")
    try:
        v4 = IPv4Address(name)
    except ValueError:
        pass
    else:
        return str(v4), v4
    if not all(len(label) <= MAX_LABEL_CHARS and _ASKED_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"{host[:64]!r} is not a host name")
    return name, None


@dataclass(frozen=True)
class Allowlist:
    """The entries of one list, in the order written; a connection is let through by the first that matches."""

    entries: tuple[AllowEntry, ...] = ()

    @classmethod
    def parse(cls, items: Iterable[str]) -> Allowlist:
        """Parse every entry; a :class:`ValueError` names the first bad one."""
        if isinstance(items, str | bytes):
            raise ValueError(f"an egress allowlist is a list of entries, got the single string {items!r}")
        return cls(tuple(parse_entry(item) for item in items))

    def match(self, host: str, port: int) -> AllowEntry | None:
        """The first entry that lets ``host:port`` through, None when none does (or ``host`` is no host)."""
        try:
            name, address = normalize_host(host)
        except ValueError:
            return None
        for entry in self.entries:
            if entry._matches(name, address, port):
                return entry
        return None

    def texts(self) -> list[str]:
        return [entry.text for entry in self.entries]
