"""The risk assessors against a loopback server: the plain HTTP protocol and the chat-completions adapter (an
OpenAI-compatible endpoint), their answers validated, and every kind of bad answer an AssessorError."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from assessor_server import assessor_server

from sandboxd.policy.assessors import (
    Assessment,
    AssessorError,
    ChatCompletionsAssessor,
    HttpAssessor,
    load_api_key,
    make_assessor,
    parse_assessment,
)
from sandboxd.policy.risk_config import DEFAULT_SYSTEM_PROMPT, RiskConfig

CONTEXT = {"request_id": "r1", "principal": "alice", "roles": ["analyst"], "role": "analyst", "tool": "sqlite_query",
           "labels": {}, "params": {"sql": "select 1"}}


def context(text: str) -> dict[str, Any]:
    return {**CONTEXT, "params": {"sql": text}}


def assess(assessor: HttpAssessor | ChatCompletionsAssessor, ctx: dict[str, Any], timeout_s: float = 10) -> Assessment:
    async def bounded() -> Assessment:
        async with asyncio.timeout(timeout_s):
            return await assessor.assess(ctx)

    return asyncio.run(bounded())


def refused(assessor: HttpAssessor | ChatCompletionsAssessor, ctx: dict[str, Any]) -> str:
    with pytest.raises(AssessorError) as caught:
        assess(assessor, ctx)
    return str(caught.value)


# -- the plain protocol -------------------------------------------------------------------------------------


def test_http_assessor_sends_the_context_and_reads_the_answer(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-test-123\n")
    key_file.chmod(0o600)
    with assessor_server() as server:
        assessor = make_assessor(RiskConfig("http", server.url, api_key_file=key_file))
        assert assess(assessor, context("select 1")) == Assessment(10.0, (), "an ordinary request")
        assert assess(assessor, context("danger")) == Assessment(90.0, ("data exfiltration",), "it reads the secrets")
        [first, _] = server.seen
        assert first.path == "/assess" and first.body == context("select 1")
        assert first.headers["Authorization"] == "Bearer sk-test-123"


@pytest.mark.parametrize(("word", "says"), [("error500", "answered HTTP 500"), ("garbage", "not JSON"),
                                            ("badscore", "risk_score must be a number from 0 to 100")])
def test_http_assessor_bad_answers(word: str, says: str) -> None:
    with assessor_server() as server:
        assert says in refused(HttpAssessor(RiskConfig("http", server.url)), context(word))


def test_nothing_listening_is_an_error() -> None:
    with assessor_server() as server:
        url = server.url
    assert "cannot connect" in refused(HttpAssessor(RiskConfig("http", url)), CONTEXT)


def test_an_answer_too_large_is_an_error() -> None:
    with assessor_server() as server:
        small = RiskConfig("http", server.url, max_response_bytes=16)
        assert "larger than 16 bytes" in refused(HttpAssessor(small), CONTEXT)


def test_a_slow_assessor_is_bounded_by_the_callers_timeout() -> None:
    with assessor_server() as server, pytest.raises(TimeoutError):
        assess(HttpAssessor(RiskConfig("http", server.url)), context("hold"), timeout_s=0.2)


# -- the chat-completions adapter ---------------------------------------------------------------------------


def chat_config(url: str, **keys: Any) -> RiskConfig:
    return RiskConfig("chat-completions", url, model="policy-model-1", **keys)


def test_chat_adapter_asks_the_model_and_validates_its_answer() -> None:
    with assessor_server(chat=True) as server:
        assessor = ChatCompletionsAssessor(chat_config(server.url), api_key="sk-chat")
        assert assess(assessor, context("danger")).risk_score == 90
        assert assess(assessor, context("fenced select")).risk_score == 10  # one code fence is tolerated
        seen = server.seen[0]
        assert seen.path == "/v1/chat/completions"
        assert seen.headers["Authorization"] == "Bearer sk-chat"
        assert seen.body["model"] == "policy-model-1" and seen.body["temperature"] == 0
        assert seen.body["response_format"] == {"type": "json_object"}
        system, user = seen.body["messages"]
        assert system == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
        assert user["role"] == "user" and json.loads(user["content"]) == context("danger")


def test_chat_adapter_prompt_and_json_mode_from_config() -> None:
    with assessor_server(chat=True) as server:
        assessor = ChatCompletionsAssessor(chat_config(server.url, system_prompt="Rate it.", json_mode=False))
        assess(assessor, CONTEXT)
        assert server.seen[0].body["messages"][0]["content"] == "Rate it."
        assert "response_format" not in server.seen[0].body


@pytest.mark.parametrize(("word", "says"), [
    ("notjson", "the model's answer is not JSON: 'I would rate this request as fairly low risk.'"),
    ("badscore", "risk_score must be a number from 0 to 100"),
    ("error500", "answered HTTP 500"),
    ("garbage", "the chat-completions endpoint answered something that is not JSON"),
])
def test_chat_adapter_bad_answers(word: str, says: str) -> None:
    with assessor_server(chat=True) as server:
        assert says in refused(ChatCompletionsAssessor(chat_config(server.url)), context(word))


# -- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "says"), [
    ([1, 2], "not a JSON object"),
    ({"threats": []}, "risk_score must be"),
    ({"risk_score": "10"}, "risk_score must be"),
    ({"risk_score": True}, "risk_score must be"),
    ({"risk_score": -1}, "risk_score must be"),
    ({"risk_score": 10, "threats": "none"}, "threats must be a list of strings"),
    ({"risk_score": 10, "threats": [1]}, "threats must be a list of strings"),
    ({"risk_score": 10, "reason": ["x"]}, "reason must be a string"),
])
def test_parse_assessment_refuses_what_is_not_an_assessment(answer: object, says: str) -> None:
    with pytest.raises(AssessorError, match=says):
        parse_assessment(answer)


def test_parse_assessment_bounds_what_it_keeps() -> None:
    assessment = parse_assessment({"risk_score": 42.5, "threats": [f"t{i}" for i in range(40)], "reason": "r" * 9999})
    assert assessment.risk_score == 42.5 and len(assessment.threats) == 16 and len(assessment.reason) < 600
    assert parse_assessment({"risk_score": 7}).details() == {"risk_score": 7, "threats": [], "reason": ""}


def test_api_key_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("sk-1\nsecond line ignored\n")
    assert load_api_key(path) == "sk-1"
    path.write_text("\n")
    with pytest.raises(ValueError, match="first line must be the API key"):
        load_api_key(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_api_key(tmp_path / "missing")
