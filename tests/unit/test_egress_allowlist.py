"""The egress allowlist: every entry form parses to what it says, every bad one is refused naming itself and
the fault, and matching keeps names and address literals apart."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

import pytest

from sandboxd.egress.allowlist import AllowEntry, Allowlist, normalize_host, parse_entry


@pytest.mark.parametrize(
    ("text", "host", "network", "port"),
    [
        ("api.example.com", "api.example.com", None, None),
        ("api.example.com:443", "api.example.com", None, 443),
        ("API.Example.COM.:8443", "api.example.com", None, 8443),
        ("*.wikipedia.org", "*.wikipedia.org", None, None),
        ("*.wikipedia.org:443", "*.wikipedia.org", None, 443),
        ("localhost:8080", "localhost", None, 8080),
        ("xn--bcher-kva.example", "xn--bcher-kva.example", None, None),
        ("1.2.3.4", None, IPv4Network("1.2.3.4/32"), None),
        ("1.2.3.4:80", None, IPv4Network("1.2.3.4/32"), 80),
        ("10.0.0.0/8", None, IPv4Network("10.0.0.0/8"), None),
        ("10.0.0.0/8:5432", None, IPv4Network("10.0.0.0/8"), 5432),
        ("[::1]:8080", None, IPv6Network("::1/128"), 8080),
        ("[fd00::/8]:443", None, IPv6Network("fd00::/8"), 443),
        ("[2001:db8::1]", None, IPv6Network("2001:db8::1/128"), None),
        ("2001:db8::1", None, IPv6Network("2001:db8::1/128"), None),
        ("2001:db8::/32", None, IPv6Network("2001:db8::/32"), None),
        ("a" * 63 + ".example", "a" * 63 + ".example", None, None),
        ("example.com:65535", "example.com", None, 65535),
        ("example.com:1", "example.com", None, 1),
    ],
)
def test_every_entry_form_parses(text: str, host: str | None, network: object, port: int | None) -> None:
    entry = parse_entry(text)
    assert entry == AllowEntry(text, host, network, port)  # type: ignore[arg-type]
    assert entry.explicit_address is (network is not None)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        (" api.example.com", "whitespace"),
        ("api example.com", "whitespace"),
        ("*", "'*' alone"),
        ("*:443", "'*' alone"),
        ("api.*.example.com", "whole leftmost label"),
        ("*api.example.com", "whole leftmost label"),
        ("api*.example.com", "whole leftmost label"),
        ("*.*.example.com", "whole leftmost label"),
        ("api..example.com", "empty label"),
        (".example.com", "empty label"),
        ("example.com..", "empty label"),
        ("-api.example.com", "not a host name label"),
        ("api-.example.com", "not a host name label"),
        ("api_x.example.com", "not a host name label"),
        ("a" * 64 + ".example", "longer than 63"),
        (".".join(["abcdefghi"] * 26), "more than DNS allows"),
        ("example.com:0", "outside 1-65535"),
        ("example.com:65536", "outside 1-65535"),
        ("example.com:", "not a number"),
        ("example.com:https", "not a number"),
        ("example.com:-1", "not a number"),
        ("1.2.3", "not an IPv4 address"),
        ("1.2.3.256", "not an IPv4 address"),
        ("10.0.0.1/8", "not an IPv4 address or network"),
        ("10.0.0.0/33", "not an IPv4 address or network"),
        ("[::1", "without its ']'"),
        ("[::1]443", "expected ':PORT'"),
        ("[::1]:0", "outside 1-65535"),
        ("[1.2.3.4]:80", "not an IPv6 address"),
        ("fe80::1%eth0", "scoped IPv6 address"),
        ("http://example.com", "not a number"),
        ("example.com/path", "not an IPv4 address or network"),
        ("bücher.example", "xn--"),
        ("example.com\x00", "printable"),
        ("user@example.com", "not a host name label"),
    ],
)
def test_bad_entries_are_refused_saying_which_and_why(text: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_entry(text)
    message = str(caught.value)
    assert repr(text) in message
    assert says in message


def test_a_list_names_its_bad_entry() -> None:
    with pytest.raises(ValueError, match=r"'api\.\.x'.*empty label"):
        Allowlist.parse(["good.example", "api..x"])
    with pytest.raises(ValueError, match="single string"):
        Allowlist.parse("api.example.com")


def test_names_match_case_insensitively_and_without_trailing_dot() -> None:
    entry = parse_entry("api.example.com:443")
    assert entry.matches("api.example.com", 443)
    assert entry.matches("API.EXAMPLE.com.", 443)
    assert not entry.matches("api.example.com", 80)
    assert not entry.matches("example.com", 443)
    assert not entry.matches("xapi.example.com", 443)
    assert parse_entry("api.example.com").matches("api.example.com", 12345)


def test_a_wildcard_stands_for_one_or_more_labels_but_not_none() -> None:
    entry = parse_entry("*.wikipedia.org:443")
    assert entry.matches("en.wikipedia.org", 443)
    assert entry.matches("a.b.wikipedia.org", 443)
    assert not entry.matches("wikipedia.org", 443)
    assert not entry.matches("enwikipedia.org", 443)
    assert not entry.matches("en.wikipedia.org.evil.test", 443)
    assert not entry.matches("en.wikipedia.org", 80)


def test_names_and_address_literals_never_match_each_other() -> None:
    by_name = parse_entry("localhost")
    assert not by_name.matches("127.0.0.1", 80)
    by_address = parse_entry("127.0.0.1")
    assert by_address.matches("127.0.0.1", 80)
    assert not by_address.matches("localhost", 80)
    network = parse_entry("10.0.0.0/8:5432")
    assert network.matches("10.1.2.3", 5432)
    assert not network.matches("11.0.0.1", 5432)
    assert not network.matches("10.1.2.3", 5433)
    v6 = parse_entry("[fd00::/8]:443")
    assert v6.matches("fd12::1", 443)
    assert v6.matches("[fd12::1]", 443)
    assert not v6.matches("10.0.0.1", 443)
    # the IPv4-mapped spelling of an allowed IPv4 address is a different literal: not let through
    assert not network.matches("::ffff:10.1.2.3", 5432)
    # numeric names a resolver would read as addresses match nothing
    assert not Allowlist.parse(["127.0.0.1", "localhost"]).match("2130706433", 80)
    assert not by_address.matches("127.1", 80)
    assert not by_address.matches("0127.0.0.1", 80)


def test_the_first_matching_entry_is_the_one_reported() -> None:
    allowlist = Allowlist.parse(["api.example.com:443", "*.example.com", "10.0.0.0/8"])
    assert allowlist.texts() == ["api.example.com:443", "*.example.com", "10.0.0.0/8"]
    assert allowlist.match("api.example.com", 443) == allowlist.entries[0]
    assert allowlist.match("api.example.com", 80) == allowlist.entries[1]
    assert allowlist.match("10.9.9.9", 22) == allowlist.entries[2]
    assert allowlist.match("example.com", 443) is None
    assert allowlist.match("not a host", 443) is None
    assert Allowlist().match("api.example.com", 443) is None


def test_asked_hosts_are_normalized_or_refused() -> None:
    assert normalize_host("API.Example.COM.") == ("api.example.com", None)
    assert normalize_host("under_score.example") == ("under_score.example", None)
    name, address = normalize_host("[::FFFF:127.0.0.1]")
    assert name == "::ffff:7f00:1" and address is not None and address.version == 6
    for bad in ("", ".", "a b", "a/b", "a@b", "fe80::1%eth0", "x" * 254, "a..b", "[::1"):
        with pytest.raises(ValueError):
            normalize_host(bad)
