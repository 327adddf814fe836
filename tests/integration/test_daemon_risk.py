"""The risk assessor through a real daemon, against loopback assessors (127.0.0.1 only): a score at or below
the role's threshold runs and a score above it is refused (RISK_TOO_HIGH, the assessor's reason), the score
and threats in the decision record either way; a repeat comes from the cache; a timeout, an HTTP 500 and a
garbage answer refuse (RISK_UNAVAILABLE, UNAVAILABLE) unless the role says risk_on_error = "allow", which its
decision record then says; the assessor's latency is in the metrics. Through the chat-completions adapter: a
model's answer allows or refuses, one that is not JSON refuses, only the params' digest is sent when so
configured, and a slow assessment delays no other caller."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from assessor_server import AssessorServer, assessor_server
from daemon_harness import Daemon, make_daemon, running, scrape

from sandboxd.cli.client import Outcome, SandboxClient, SandboxdError

pytestmark = pytest.mark.root

ECHO = """
description = "takes a text (here: exits 0)"
argv = ["/bin/true"]
[params_schema]
type = "object"
properties = { text = { type = "string" } }
"""

PRINCIPALS = {"guarded": "guarded", "lenient": "lenient", "plain": "plain"}


def policy_toml(risk: str) -> str:
    lines = ["[principals.local-admin]", 'roles = ["admin"]']
    for name, role in PRINCIPALS.items():
        digest = hashlib.sha256(f"{name}-token".encode()).hexdigest()
        lines += [f"[principals.{name}]", f'roles = ["{role}"]', f'token_sha256 = ["{digest}"]']
    return "\n".join(lines) + f"""
[roles.admin]
tools = ["*"]
commands = true
admin = true
[roles.guarded]
tools = ["echo"]
commands = true
risk_threshold = 50
[roles.lenient]
tools = ["echo"]
risk_threshold = 50
risk_on_error = "allow"
[roles.plain]
tools = ["echo"]
{risk}
"""


@dataclass
class Setup:
    daemon: Daemon
    server: AssessorServer


def start(tmp_path_factory: pytest.TempPathFactory, *, chat: bool, risk: str) -> Iterator[Setup]:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    with assessor_server(chat=chat) as server:
        extra = policy_toml(risk.replace("URL", server.url))
        daemon = make_daemon(tmp_path_factory.mktemp("risk"), tools={"echo": ECHO}, extra=extra,
                             metrics_listen="127.0.0.1:0")
        with running(daemon):
            yield Setup(daemon, server)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """The plain HTTP assessor, sent the params, with a 1 s timeout."""
    yield from start(tmp_path_factory, chat=False, risk="""
[policy.risk]
assessor = "http"
url = "URL"
send_params = "full"
timeout = "1s"
cache_ttl = "60s"
""")


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """An OpenAI-compatible chat-completions endpoint, sent the params' digest only, with a 20 s timeout."""
    yield from start(tmp_path_factory, chat=True, risk="""
[policy.risk]
assessor = "chat-completions"
url = "URL"
model = "policy-model-1"
timeout = "20s"
""")


def call(daemon: Daemon, principal: str, text: str, *, labels: dict[str, str] | None = None) -> tuple[
        Outcome | SandboxdError, dict[str, Any]]:
    """Run echo as ``principal``; the outcome or the refusal, and the request's decision record's details."""
    request_id = uuid.uuid4().hex[:12]
    result: Outcome | SandboxdError
    with SandboxClient(daemon.socket, token=f"{principal}-token") as client:
        try:
            result = client.run_tool("echo", {"text": text}, request_id=request_id, labels=labels)
        except SandboxdError as error:
            result = error
    [decision] = [r for r in daemon.audit_records() if r["request_id"] == request_id and r["event"] == "decision"]
    return result, decision["details"]


def refused(daemon: Daemon, principal: str, text: str, code: grpc.StatusCode, reason: str,
            **kwargs: Any) -> tuple[SandboxdError, dict[str, Any]]:
    result, details = call(daemon, principal, text, **kwargs)
    assert isinstance(result, SandboxdError), result
    assert (result.code, result.reason) == (code, reason), result
    assert (details["outcome"], details["reason"]) == ("denied", reason)
    return result, details


def allowed(daemon: Daemon, principal: str, text: str, **kwargs: Any) -> dict[str, Any]:
    result, details = call(daemon, principal, text, **kwargs)
    assert isinstance(result, Outcome) and result.status_name == "OK", result
    assert details["outcome"] == "allowed"
    return details


def unique(word: str = "") -> str:
    return f"{word} {uuid.uuid4().hex[:8]}".strip()


# -- the plain assessor --------------------------------------------------------------------------------------


def test_below_the_threshold_runs_with_the_score_recorded(plain: Setup) -> None:
    risk = allowed(plain.daemon, "guarded", unique())["risk"]
    assert (risk["risk_score"], risk["threats"], risk["threshold"], risk["cached"]) == (10, [], 50, False)
    assert risk["reason"] == "an ordinary request" and risk["latency_ms"] >= 0


def test_above_the_threshold_is_refused_with_the_assessors_reason(plain: Setup) -> None:
    error, details = refused(plain.daemon, "guarded", unique("danger"), grpc.StatusCode.PERMISSION_DENIED,
                             "RISK_TOO_HIGH")
    assert "scored this request 90, above role 'guarded''s risk_threshold of 50: it reads the secrets" in \
        error.message
    assert (details["risk"]["risk_score"], details["risk"]["threats"]) == (90, ["data exfiltration"])


def test_the_assessor_is_told_the_request(plain: Setup) -> None:
    text = unique()
    allowed(plain.daemon, "guarded", text, labels={"mcp_session": "s-1"})
    [context] = [c for c in plain.server.contexts() if c.get("params") == {"text": text}]
    assert (context["principal"], context["roles"], context["role"], context["tool"]) == (
        "guarded", ["guarded"], "guarded", "echo")
    assert context["labels"] == {"mcp_session": "s-1"} and context["request_id"]


def test_a_repeat_comes_from_the_cache(plain: Setup) -> None:
    text = unique()
    allowed(plain.daemon, "guarded", text)
    again = allowed(plain.daemon, "guarded", text)["risk"]
    assert again["cached"] is True and again["risk_score"] == 10
    assert sum(1 for c in plain.server.contexts() if c.get("params") == {"text": text}) == 1
    # another principal with the same params is a request of its own
    allowed(plain.daemon, "lenient", text)
    assert sum(1 for c in plain.server.contexts() if c.get("params") == {"text": text}) == 2


@pytest.mark.parametrize(("word", "says"), [("hold", "no answer within 1000 ms"), ("error500", "answered HTTP 500"),
                                            ("garbage", "not JSON"), ("badscore", "risk_score must be")])
def test_no_usable_answer_refuses(plain: Setup, word: str, says: str) -> None:
    error, details = refused(plain.daemon, "guarded", unique(word), grpc.StatusCode.UNAVAILABLE, "RISK_UNAVAILABLE")
    assert says in error.message and error.temporary
    assert details["risk"]["on_error"] == "deny" and says in details["risk"]["error"]


def test_risk_on_error_allow_runs_and_the_record_says_so(plain: Setup) -> None:
    risk = allowed(plain.daemon, "lenient", unique("error500"))["risk"]
    assert risk["on_error"] == "allow" and "answered HTTP 500" in risk["error"]
    refused(plain.daemon, "lenient", unique("danger"), grpc.StatusCode.PERMISSION_DENIED, "RISK_TOO_HIGH")


def test_a_role_without_a_threshold_is_not_assessed(plain: Setup) -> None:
    text = unique("danger")
    assert "risk" not in allowed(plain.daemon, "plain", text)
    assert not [c for c in plain.server.contexts() if c.get("params") == {"text": text}]


def test_raw_commands_are_assessed_too(plain: Setup) -> None:
    with SandboxClient(plain.daemon.socket, token="guarded-token") as client:
        assert client.run_command(["/bin/true", unique()]).status_name == "OK"
        with pytest.raises(SandboxdError) as caught:
            client.run_command(["/bin/true", unique("danger")])
    assert caught.value.reason == "RISK_TOO_HIGH"


def test_the_assessors_latency_is_in_the_metrics(plain: Setup) -> None:
    text = unique()
    allowed(plain.daemon, "guarded", text)
    allowed(plain.daemon, "guarded", text)
    samples = scrape(plain.daemon)
    assert samples['sandboxd_risk_assessment_seconds_count{outcome="ok"}'] >= 1
    assert samples['sandboxd_risk_checks_total{result="ok"}'] >= 1
    assert samples['sandboxd_risk_checks_total{result="cached"}'] >= 1
    assert samples['sandboxd_decisions_total{decision="denied",reason="RISK_TOO_HIGH"}'] >= 1


# -- the chat-completions adapter ----------------------------------------------------------------------------


def test_a_models_answer_allows_or_refuses(chat: Setup) -> None:
    risk = allowed(chat.daemon, "guarded", unique(), labels={"case": unique()})["risk"]
    assert risk["risk_score"] == 10
    _, details = refused(chat.daemon, "guarded", unique(), grpc.StatusCode.PERMISSION_DENIED, "RISK_TOO_HIGH",
                         labels={"case": unique("danger")})
    assert details["risk"]["threats"] == ["data exfiltration"]
    body = chat.server.seen[-1].body
    assert body["model"] == "policy-model-1" and body["messages"][0]["role"] == "system"


def test_a_model_answer_that_is_not_json_refuses(chat: Setup) -> None:
    error, _ = refused(chat.daemon, "guarded", unique(), grpc.StatusCode.UNAVAILABLE, "RISK_UNAVAILABLE",
                       labels={"case": unique("notjson")})
    assert "the model's answer is not JSON" in error.message


def test_only_the_params_digest_is_sent(chat: Setup) -> None:
    text = unique("secret-value")
    case = unique()
    allowed(chat.daemon, "guarded", text, labels={"case": case})
    [context] = [c for c in chat.server.contexts() if c["labels"] == {"case": case}]
    assert "params" not in context and text not in json.dumps(context)
    assert context["params_sha256"] == hashlib.sha256(json.dumps({"text": text}, separators=(",", ":")).encode()
                                                      ).hexdigest()


def test_a_slow_assessment_delays_no_other_caller(chat: Setup) -> None:
    chat.server.held.clear()
    outcome: list[dict[str, Any]] = []
    slow = threading.Thread(target=lambda: outcome.append(
        allowed(chat.daemon, "guarded", unique(), labels={"case": unique("hold")})))
    slow.start()
    try:
        assert chat.server.held.wait(30), "the slow assessment never reached the assessor"
        # while it waits for its assessor: another assessed caller, and one that is not assessed, are served
        assert allowed(chat.daemon, "lenient", unique(), labels={"case": unique()})["risk"]["risk_score"] == 10
        assert "risk" not in allowed(chat.daemon, "plain", unique())
        assert slow.is_alive() and not outcome
    finally:
        chat.server.release()
        slow.join(60)
    assert outcome and outcome[0]["risk"]["risk_score"] == 10
