"""A client of a fleet without daemons: where the daemons are (targets), when a call is retried and where
(retry policy, the client's retry loop), which member a session's call goes to (fleet, session ids)."""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from sandboxd.api.session_ids import daemon_of, new_session_id
from sandboxd.cli import client as client_module
from sandboxd.cli.client import SandboxClient, SandboxdError, TlsFiles
from sandboxd.cli.errors import NOT_CONNECTED_DETAILS
from sandboxd.cli.fleet import Fleet, NoSuchDaemon
from sandboxd.cli.retry import NO_RETRY, RetryPolicy
from sandboxd.cli.targets import FLEET_SERVICE_CONFIG, Endpoint, parse_targets

# -- targets -------------------------------------------------------------------------------------------


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolved {host}:{port}")


def test_one_address_or_a_socket_is_one_daemon() -> None:
    assert parse_targets(socket_path="/run/x.sock").channel_target == "unix:/run/x.sock"
    one = parse_targets(addresses=["10.0.0.5:7070"], resolve=no_dns)
    assert (one.channel_target, one.fleet, one.channel_options()) == ("10.0.0.5:7070", False, [])


def test_several_ip_addresses_are_a_round_robin_fleet() -> None:
    fleet = parse_targets(addresses=["10.0.0.5:7070", "10.0.0.6:7071"], resolve=no_dns)
    assert fleet.channel_target == "ipv4:10.0.0.5:7070,10.0.0.6:7071" and fleet.fleet
    assert fleet.tls_server_name is None  # two hosts: no one name to check their certificates against
    config = json.loads(dict(fleet.channel_options())["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": "sandboxd.v1.Sandbox"}
    assert fleet.endpoints() == [Endpoint("ipv4:10.0.0.5:7070", "10.0.0.5:7070"),
                                 Endpoint("ipv4:10.0.0.6:7071", "10.0.0.6:7071")]
    v6 = parse_targets(addresses=["[::1]:7070", "[::1]:7071"], resolve=no_dns)
    assert v6.channel_target == "ipv6:[::1]:7070,[::1]:7071" and v6.tls_server_name == "::1"


def test_host_names_are_resolved_once_and_the_shared_one_checks_tls() -> None:
    fleet = parse_targets(addresses=["localhost:7001", "localhost:7002"],
                          resolve=lambda host, port: ["127.0.0.1", "::1"])
    assert fleet.channel_target == "ipv4:127.0.0.1:7001,127.0.0.1:7002"
    assert ("grpc.ssl_target_name_override", "localhost") in fleet.channel_options()
    named = parse_targets(addresses=["a:1", "b:2"], tls_server_name="svc.example", resolve=lambda h, p: ["10.0.0.9"])
    assert named.tls_server_name == "svc.example"


@pytest.mark.parametrize(("addresses", "error"), [
    (["10.0.0.5:7070", "[::1]:7070"], "mix IPv4 and IPv6"),
    (["10.0.0.5:7070", "dns:///svc:7070"], "either several HOST:PORT"),
    (["10.0.0.5", "10.0.0.6:1"], "is not HOST:PORT"),
    (["10.0.0.5:99999", "10.0.0.6:1"], "is not HOST:PORT"),
])
def test_what_cannot_be_a_fleet_is_refused(addresses: list[str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_targets(addresses=addresses, resolve=no_dns)


def test_a_dns_name_is_a_fleet_of_its_addresses_checked_against_the_name() -> None:
    answers = {"sandboxd.ns.svc": ["10.1.0.7", "10.1.0.8"]}
    fleet = parse_targets(target="dns:///sandboxd.ns.svc:7070", resolve=lambda host, port: answers[host])
    assert (fleet.channel_target, fleet.fleet, fleet.dns) == ("dns:///sandboxd.ns.svc:7070", True,
                                                              ("sandboxd.ns.svc", 7070))
    assert fleet.tls_server_name == "sandboxd.ns.svc"
    assert [e.target for e in fleet.endpoints()] == ["ipv4:10.1.0.7:7070", "ipv4:10.1.0.8:7070"]
    answers["sandboxd.ns.svc"] = ["10.1.0.9"]  # a pod replaced
    assert [e.target for e in fleet.endpoints()] == ["ipv4:10.1.0.9:7070"]


def test_a_client_refuses_tls_over_hosts_without_one_name(tmp_path: Path) -> None:
    with pytest.raises(SandboxdError, match="tls-server-name"):
        SandboxClient(addresses=["10.0.0.5:1", "10.0.0.6:1"], tls=TlsFiles(ca_file=tmp_path / "ca.pem"))


# -- the retry policy ----------------------------------------------------------------------------------


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=0.1, max_backoff_s=0.5, multiplier=2)
    low = [policy.backoff_s(n, uniform=lambda a, b: a) for n in range(1, 6)]
    high = [policy.backoff_s(n, uniform=lambda a, b: b) for n in range(1, 6)]
    assert low == pytest.approx([0.05, 0.1, 0.2, 0.25, 0.25])
    assert high == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert [policy.allows(n) for n in (1, 4, 5)] == [True, True, False]
    assert not NO_RETRY.allows(1)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


# -- the fleet's members -------------------------------------------------------------------------------


@dataclass
class FakeMember:
    target: str
    name: str | None  # None: does not answer
    ready: bool = True
    closed: bool = False
    asked: int = 0

    def instance(self) -> str:
        self.asked += 1
        if self.name is None:
            raise SandboxdError(grpc.StatusCode.UNAVAILABLE, "", "connection refused")
        return self.name

    def is_ready(self) -> bool:
        return self.ready

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeCluster:
    """What a DNS name resolves to, and the members the fleet made."""

    addresses: list[str]
    names: dict[str, str | None] = field(default_factory=dict)
    made: dict[str, FakeMember] = field(default_factory=dict)

    def connect(self, endpoint: Endpoint) -> FakeMember:
        member = FakeMember(endpoint.target, self.names.get(endpoint.label, endpoint.label))
        self.made[endpoint.target] = member
        return member


def dns_fleet(cluster: FakeCluster, now: list[float]) -> Fleet[FakeMember]:
    targets = parse_targets(target="dns:///svc:7070", resolve=lambda host, port: list(cluster.addresses))
    return Fleet(targets, cluster.connect, refresh_s=5.0, clock=lambda: now[0])


def test_members_follow_the_name_and_close_what_it_no_longer_has() -> None:
    cluster, now = FakeCluster(["10.0.0.1", "10.0.0.2"]), [0.0]
    fleet = dns_fleet(cluster, now)
    first = fleet.members()
    assert [m.target for m in first] == ["ipv4:10.0.0.1:7070", "ipv4:10.0.0.2:7070"]
    cluster.addresses = ["10.0.0.2", "10.0.0.3"]
    assert fleet.members() == first  # not re-resolved within refresh_s
    now[0] = 5.0
    again = fleet.members()
    assert [m.target for m in again] == ["ipv4:10.0.0.2:7070", "ipv4:10.0.0.3:7070"]
    assert again[0] is first[1] and first[0].closed  # kept the member it still has, closed the gone one
    cluster.addresses = []
    with pytest.raises(NoSuchDaemon, match="has no address"):
        fleet.members(refresh=True)


def test_a_sessions_daemon_is_found_by_instance_re_resolving_once() -> None:
    cluster, now = FakeCluster(["10.0.0.1"], names={"10.0.0.1:7070": "node-a", "10.0.0.2:7070": "node-b"}), [0.0]
    fleet = dns_fleet(cluster, now)
    assert fleet.find("node-a").target == "ipv4:10.0.0.1:7070"
    cluster.addresses = ["10.0.0.1", "10.0.0.2"]  # a daemon the cached resolution does not know yet
    assert fleet.find("node-b").target == "ipv4:10.0.0.2:7070"
    with pytest.raises(NoSuchDaemon, match=r"instance 'node-z'.*node-a.*node-b"):
        fleet.find("node-z")


def test_another_daemon_is_one_ready_not_refused_taken_in_turn() -> None:
    cluster = FakeCluster([], names={"10.0.0.1:1": "a", "10.0.0.2:1": "b", "10.0.0.3:1": "c", "10.0.0.4:1": None})
    targets = parse_targets(addresses=["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"], resolve=no_dns)
    fleet = Fleet(targets, cluster.connect)
    picks = [fleet.other_than({"a"}) for _ in range(4)]
    assert [p.name if p else None for p in picks] == ["b", "b", "c", "b"]  # in turn; never a, never the silent
    cluster.made["ipv4:10.0.0.2:1"].ready = False  # b's connection dropped
    assert {fleet.other_than({"a"}).name for _ in range(3)} == {"c"}  # type: ignore[union-attr]
    assert fleet.other_than({"a", "c"}) is None


# -- session ids ---------------------------------------------------------------------------------------


def test_a_session_id_names_its_daemon() -> None:
    session_id = new_session_id("node-a.example")
    assert daemon_of(session_id) == "node-a.example"
    assert len(session_id.rpartition(".")[2]) == 16
    assert daemon_of("3f9c0e1d2b4a5968") is None  # an id from before ids named their daemon
    assert daemon_of("node.3F9C0E1D2B4A5968") is None and daemon_of("") is None


# -- the client's retry loop ---------------------------------------------------------------------------


def refusal(instance: str, *, temporary: bool = True, reason: str = "TOO_MANY_EXECUTIONS") -> SandboxdError:
    return SandboxdError(grpc.StatusCode.RESOURCE_EXHAUSTED, reason, "busy", temporary=temporary, instance=instance)


class Script:
    """What each attempt does, in order: a refusal raised before anything, or events then maybe an error."""

    def __init__(self, *steps: SandboxdError | list[str] | tuple[list[str], SandboxdError]) -> None:
        self.steps = list(steps)
        self.daemons: list[object] = []

    def attempt(self, daemon: object) -> Generator[str, None, None]:
        self.daemons.append(daemon)
        step = self.steps.pop(0)
        if isinstance(step, SandboxdError):
            raise step
        events, error = step if isinstance(step, tuple) else (step, None)
        yield from events
        if error is not None:
            raise error


@pytest.fixture
def fleet_client(monkeypatch: pytest.MonkeyPatch) -> Generator[tuple[SandboxClient, list[float]], None, None]:
    """A client of three (absent) daemons whose members are fakes named a, b, c; sleeps recorded."""
    slept: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", slept.append)
    client = SandboxClient(addresses=["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
                           retry=RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.04))
    cluster = FakeCluster([], names={"127.0.0.1:1": "a", "127.0.0.1:2": "b", "127.0.0.1:3": "c"})
    client._fleet = Fleet(client._targets, cluster.connect)  # type: ignore[arg-type]
    yield client, slept
    client.close()


def test_a_temporary_refusal_is_retried_on_a_daemon_that_has_not_refused(
        fleet_client: tuple[SandboxClient, list[float]]) -> None:
    client, slept = fleet_client
    script = Script(refusal("a"), refusal("b"), ["started", "result"])
    assert list(client._spread(script.attempt)) == ["started", "result"]
    assert script.daemons[0] is client  # the first through round_robin
    assert [getattr(d, "name", None) for d in script.daemons[1:]] == ["b", "c"]  # never a again, then not b
    assert len(slept) == 2 and all(0.005 <= s <= 0.02 for s in slept)


def test_a_call_that_started_or_a_lasting_refusal_is_never_retried(
        fleet_client: tuple[SandboxClient, list[float]]) -> None:
    client, slept = fleet_client
    broke = SandboxdError(grpc.StatusCode.UNAVAILABLE, "DRAINING", "x", temporary=True, instance="a")
    script = Script((["started"], broke))
    got: list[str] = []
    with pytest.raises(SandboxdError) as caught:
        got.extend(client._spread(script.attempt))
    assert caught.value is broke and len(script.daemons) == 1
    script = Script(refusal("a", temporary=False, reason="TOOL_NOT_GRANTED"))
    with pytest.raises(SandboxdError, match="TOOL_NOT_GRANTED"):
        list(client._spread(script.attempt))
    unreachable = SandboxdError(grpc.StatusCode.UNAVAILABLE, "", "connection reset")  # may have reached it
    with pytest.raises(SandboxdError, match="connection reset"):
        list(client._spread(Script(unreachable).attempt))
    assert slept == []


def test_a_retry_whose_daemon_has_just_stopped_goes_on_to_another(
        fleet_client: tuple[SandboxClient, list[float]]) -> None:
    """The member chosen for a retry looked ready, then stopped before the call: grpc connected nowhere, so
    nothing was sent and the call may go elsewhere. The same words from round_robin's own pick are final."""
    client, _ = fleet_client
    gone = SandboxdError(grpc.StatusCode.UNAVAILABLE, "", f"{NOT_CONNECTED_DETAILS}; last error: Connection refused")
    assert gone.never_sent and not refusal("a").never_sent
    script = Script(refusal("a"), gone, ["started", "result"])
    assert list(client._spread(script.attempt)) == ["started", "result"]
    assert [getattr(d, "name", "round_robin") for d in script.daemons] == ["round_robin", "b", "c"]
    with pytest.raises(SandboxdError) as caught:
        list(client._spread(Script(gone).attempt))
    assert caught.value is gone


def test_refused_everywhere_starts_a_new_round_then_gives_up(fleet_client: tuple[SandboxClient, list[float]]) -> None:
    client, slept = fleet_client
    script = Script(refusal("a"), refusal("b"), refusal("c"), refusal("a"))
    with pytest.raises(SandboxdError) as caught:
        list(client._spread(script.attempt))
    assert caught.value.instance == "a"  # the last refusal, after max_attempts
    assert [getattr(d, "name", "round_robin") for d in script.daemons] == ["round_robin", "b", "c", "round_robin"]
    assert len(slept) == 3


def test_a_single_daemon_client_never_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    with SandboxClient(target="127.0.0.1:1") as client:
        assert not client.is_fleet and client.daemons() == [client]
        assert client.for_session("node-a.0123456789abcdef") is client
        with pytest.raises(SandboxdError):
            list(client._spread(Script(refusal("a"), ["result"]).attempt))


def test_a_fleet_refuses_a_session_id_that_names_no_daemon(fleet_client: tuple[SandboxClient, list[float]]) -> None:
    client, _ = fleet_client
    with pytest.raises(SandboxdError, match="names no daemon") as caught:
        client.for_session("0123456789abcdef")
    assert caught.value.reason == "INVALID_REQUEST"
    assert client.for_session("b.0123456789abcdef").target == "ipv4:127.0.0.1:2"
    with pytest.raises(SandboxdError) as missing:
        client.for_session("zz.0123456789abcdef")
    assert (missing.value.reason, missing.value.code) == ("SESSION_NOT_FOUND", grpc.StatusCode.NOT_FOUND)
    assert FLEET_SERVICE_CONFIG in dict(client._targets.channel_options()).values()
