"""The risk gate with a scripted assessor: the threshold, the cache (its key and TTL), failing closed (timeout,
error, no slot) unless the role allows it, one assessment shared by identical requests, a slow assessment
delaying nobody else — and the ``[policy.risk]`` table and the roles' keys, with errors naming file and key."""

from __future__ import annotations

import asyncio
import dataclasses
import tomllib
from collections.abc import Mapping
from typing import Any

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.base.refusals import RiskTooHigh, RiskUnavailable
from sandboxd.base.toml import TomlTable
from sandboxd.policy.assessors import Assessment, AssessorError
from sandboxd.policy.auth import Identity
from sandboxd.policy.config import RoleConfig, parse_policy
from sandboxd.policy.risk import RiskGate, RiskRequest, digest
from sandboxd.policy.risk_config import RiskConfig

ALICE = Identity("alice", ("analyst",), "static-token")
GUARDED = RoleConfig("analyst", risk_threshold=50)
LENIENT = RoleConfig("lenient", risk_threshold=50, risk_on_error="allow")


class Scripted:
    """An assessor whose answer is chosen by the params' ``say``: a score, "error", or "hold" (until released)."""

    def __init__(self) -> None:
        self.calls: list[Mapping[str, Any]] = []
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def assess(self, context: Mapping[str, Any]) -> Assessment:
        self.calls.append(context)
        say = context["params"]["say"]
        if say == "hold":
            self.holding.set()
            await self.release.wait()
            return Assessment(5.0, (), "released")
        if say == "error":
            raise AssessorError("answered HTTP 500: boom")
        return Assessment(float(say), ("t",) if float(say) > 50 else (), f"scored {say}")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def request(say: object, principal: str = "alice", tool: str = "sqlite_query") -> RiskRequest:
    identity = Identity(principal, ("analyst",), "static-token")
    return RiskRequest.of(identity, role="analyst", tool=tool, params={"say": say}, argv=None, labels={"k": "v"},
                          request_id="r1", send_params="full")


def gate(**config: Any) -> tuple[RiskGate, Scripted, Clock, list[tuple[str, float | None]]]:
    assessor, clock, seen = Scripted(), Clock(), []
    risk = RiskGate(RiskConfig("http", "http://127.0.0.1:1/assess", **config), assessor, monotonic=clock)
    return risk, assessor, clock, seen


def test_below_the_threshold_passes_with_what_the_assessor_said() -> None:
    async def main() -> None:
        risk, _, _, seen = gate()
        details = await risk.check(GUARDED, request(50), observe=lambda *item: seen.append(item))
        assert details["risk"] == {"risk_score": 50, "threats": [], "reason": "scored 50", "threshold": 50,
                                   "cached": False, "latency_ms": 0}
        assert [result for result, _ in seen] == ["ok"]

    asyncio.run(main())


def test_above_the_threshold_is_refused_with_the_reason() -> None:
    async def main() -> None:
        risk, _, _, _ = gate()
        with pytest.raises(RiskTooHigh) as caught:
            await risk.check(GUARDED, request(51))
        error = caught.value
        assert (error.reason, error.role) == ("RISK_TOO_HIGH", "analyst")
        assert "scored this request 51, above role 'analyst''s risk_threshold of 50: scored 51" in error.message
        assert error.audit_details()["risk"]["threats"] == ["t"]

    asyncio.run(main())


def test_a_repeat_is_answered_from_the_cache_until_its_ttl() -> None:
    async def main() -> None:
        risk, assessor, clock, seen = gate(cache_ttl_ms=60_000)
        observe = lambda *item: seen.append(item)  # noqa: E731
        await risk.check(GUARDED, request(10), observe=observe)
        details = await risk.check(GUARDED, request(10), observe=observe)
        assert details["risk"]["cached"] is True and "latency_ms" not in details["risk"]
        assert len(assessor.calls) == 1
        # the key is (principal, tool, params): another of any is asked anew
        await risk.check(GUARDED, request(10, principal="bob"))
        await risk.check(GUARDED, request(10, tool="reader"))
        await risk.check(GUARDED, request(11))
        assert len(assessor.calls) == 4
        with pytest.raises(RiskTooHigh):  # a refused score is cached too: the same answer, refused again
            await risk.check(GUARDED, request(90))
        with pytest.raises(RiskTooHigh):
            await risk.check(GUARDED, request(90))
        assert len(assessor.calls) == 5
        clock.now += 60
        await risk.check(GUARDED, request(10))
        assert len(assessor.calls) == 6
        assert [result for result, _ in seen] == ["ok", "cached"]

    asyncio.run(main())


def test_failures_are_not_cached_and_refuse() -> None:
    async def main() -> None:
        risk, assessor, _, _ = gate()
        for _ in range(2):
            with pytest.raises(RiskUnavailable) as caught:
                await risk.check(GUARDED, request("error"))
        assert len(assessor.calls) == 2
        error = caught.value
        assert (error.reason, error.temporary) == ("RISK_UNAVAILABLE", True)
        assert "answered HTTP 500: boom" in error.message and 'risk_on_error = "deny"' in error.message
        assert error.audit_details() == {"risk": {"threshold": 50, "error": "answered HTTP 500: boom",
                                                  "on_error": "deny"}}

    asyncio.run(main())


def test_risk_on_error_allow_lets_it_through_and_says_so() -> None:
    async def main() -> None:
        risk, _, _, _ = gate()
        details = await risk.check(LENIENT, request("error"))
        assert details == {"risk": {"threshold": 50, "error": "answered HTTP 500: boom", "on_error": "allow"}}
        with pytest.raises(RiskTooHigh):  # an answer above the threshold is still refused
            await risk.check(LENIENT, request(80))

    asyncio.run(main())


def test_a_timeout_refuses() -> None:
    async def main() -> None:
        risk, _, _, seen = gate(timeout_ms=50)
        with pytest.raises(RiskUnavailable, match="no answer within 50 ms"):
            await risk.check(GUARDED, request("hold"), observe=lambda *item: seen.append(item))
        assert [result for result, _ in seen] == ["timeout"]
        assert risk.in_flight == 0

    asyncio.run(main())


def test_no_slot_in_time_refuses_as_busy() -> None:
    async def main() -> None:
        risk, assessor, _, seen = gate(timeout_ms=5000, max_in_flight=1)
        held = asyncio.create_task(risk.check(GUARDED, request("hold")))
        await assessor.holding.wait()
        # the same slots, a shorter wait
        quick = RiskGate(dataclasses.replace(risk.config, timeout_ms=50), assessor, slots=risk._slots)
        with pytest.raises(RiskUnavailable, match="no slot within 50 ms: 1 assessments in flight"):
            await quick.check(GUARDED, request(1), observe=lambda *item: seen.append(item))
        assert seen == [("busy", None)]
        assessor.release.set()
        assert (await held)["risk"]["reason"] == "released"

    asyncio.run(main())


def test_identical_requests_share_one_assessment() -> None:
    async def main() -> None:
        risk, assessor, _, _ = gate()
        first = asyncio.create_task(risk.check(GUARDED, request("hold")))
        await assessor.holding.wait()
        second = asyncio.create_task(risk.check(GUARDED, request("hold")))
        await asyncio.sleep(0)
        assessor.release.set()
        assert (await first)["risk"]["reason"] == (await second)["risk"]["reason"] == "released"
        assert len(assessor.calls) == 1

    asyncio.run(main())


def test_a_slow_assessment_delays_nobody_else() -> None:
    async def main() -> None:
        risk, assessor, _, _ = gate(timeout_ms=10_000)
        slow = asyncio.create_task(risk.check(GUARDED, request("hold")))
        await assessor.holding.wait()
        # others are answered while the slow one is still waiting for its assessor
        assert (await risk.check(GUARDED, request(20)))["risk"]["risk_score"] == 20
        assert await risk.check(RoleConfig("unassessed"), request(99)) == {}
        assert not slow.done()
        assessor.release.set()
        await slow

    asyncio.run(main())


def test_a_caller_that_leaves_does_not_cancel_the_shared_assessment() -> None:
    async def main() -> None:
        risk, assessor, _, _ = gate()
        leaving = asyncio.create_task(risk.check(GUARDED, request("hold")))
        await assessor.holding.wait()
        staying = asyncio.create_task(risk.check(GUARDED, request("hold")))
        await asyncio.sleep(0)
        leaving.cancel()
        assessor.release.set()
        assert (await staying)["risk"]["reason"] == "released"

    asyncio.run(main())


def test_the_context_holds_the_params_or_their_digest() -> None:
    full = request(10).context
    assert full == {"request_id": "r1", "principal": "alice", "roles": ["analyst"], "role": "analyst",
                    "tool": "sqlite_query", "labels": {"k": "v"}, "params": {"say": 10}}
    hidden = RiskRequest.of(ALICE, role="analyst", tool="t", params={"b": 1, "a": 2}, argv=None, labels={},
                            request_id="", send_params="digest").context
    assert "params" not in hidden and hidden["params_sha256"] == digest({"a": 2, "b": 1})
    command = RiskRequest.of(ALICE, role="ops", tool="", params=None, argv=["/bin/rm", "-rf", "/"], labels={},
                             request_id="", send_params="full")
    assert command.context["command"] == ["/bin/rm", "-rf", "/"]
    assert command.cache_key == ("alice", "", digest(["/bin/rm", "-rf", "/"]))


def test_a_reload_with_the_same_config_keeps_the_cache() -> None:
    async def main() -> None:
        config = RiskConfig("http", "http://127.0.0.1:1/assess")
        first = RiskGate.build(config)
        first._cache["k"] = (1e18, Assessment(1.0))
        assert RiskGate.build(config, first)._cache is first._cache
        assert not RiskGate.build(RiskConfig("http", "http://127.0.0.1:2/assess"), first)._cache

    asyncio.run(main())


# -- configuration ------------------------------------------------------------------------------------------

FILE = "/etc/sandboxd/sandboxd.toml"
BASE = '[auth]\nunix_socket_principal = ""\n[principals.p]\nroles = ["r"]\n'


def parse(text: str) -> Any:
    top = TomlTable(tomllib.loads(BASE + text), file=FILE)
    policy = parse_policy(top)
    top.finish()
    return policy


def test_the_risk_table_and_the_role_keys() -> None:
    policy = parse('[policy.risk]\nassessor = "chat-completions"\nurl = "http://127.0.0.1:8000/v1"\n'
                   'model = "m"\ntimeout = "1500ms"\nsend_params = "full"\ncache_ttl = "0s"\n'
                   '[roles.r]\nrisk_threshold = 70\nrisk_on_error = "allow"\n')
    assert policy.risk == RiskConfig("chat-completions", "http://127.0.0.1:8000/v1", model="m", timeout_ms=1500,
                                     send_params="full", cache_ttl_ms=0)
    assert (policy.roles["r"].risk_threshold, policy.roles["r"].risk_on_error) == (70, "allow")
    assert parse('[roles.r]\ntools = []\n').risk is None


RISK = '[policy.risk]\nassessor = "http"\nurl = "http://127.0.0.1:8700/assess"\n'


@pytest.mark.parametrize(("text", "key", "says"), [
    ('[policy.risk]\nurl = "http://x/"\n', "policy.risk.assessor", "required: one of 'http', 'chat-completions'"),
    ('[policy.risk]\nassessor = "http"\n', "policy.risk.url", "required"),
    ('[policy.risk]\nassessor = "http"\nurl = "ftp://x/"\n', "policy.risk.url", "not an http:// or https:// URL"),
    ('[policy.risk]\nassessor = "http"\nurl = "http://u:p@x/"\n', "policy.risk.url", "no credentials in the URL"),
    ('[policy.risk]\nassessor = "chat-completions"\nurl = "http://x/v1"\n', "policy.risk.model", "required"),
    (RISK + 'model = "m"\n', "policy.risk.model", "is for assessor = \"chat-completions\""),
    (RISK + 'timeout = "0s"\n', "policy.risk.timeout", "more than 0"),
    (RISK + 'timeout = "5m"\n', "policy.risk.timeout", "at most \"60s\""),
    (RISK + 'send_params = "some"\n', "policy.risk.send_params", "\"digest\" or \"full\""),
    (RISK + 'max_in_flight = 0\n', "policy.risk.max_in_flight", "between 1 and"),
    (RISK + 'api_key_file = "key"\n', "policy.risk.api_key_file", "absolute path"),
    (RISK + 'retries = 3\n', "policy.risk.retries", "unknown key"),
    ('[roles.r]\nrisk_threshold = 50\n', "roles.r.risk_threshold", "without a risk assessor"),
    (RISK + '[roles.r]\nrisk_threshold = 101\n', "roles.r.risk_threshold", "between 0 and 100"),
    (RISK + '[roles.r]\nrisk_threshold = 5\nrisk_on_error = "pass"\n', "roles.r.risk_on_error", '"deny" or "allow"'),
    (RISK + '[roles.r]\nrisk_on_error = "allow"\n', "roles.r.risk_on_error", "without risk_threshold"),
])
def test_errors_name_the_file_and_the_key(text: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text if "[roles" in text else text + "[roles.r]\n")
    assert caught.value.message.startswith(f"{FILE}: {key}: "), caught.value.message
    assert says in caught.value.message, caught.value.message
