"""Risk assessors: given a request's context (a JSON object), a score 0-100, the threats seen and why.

Two kinds, both asked over HTTP with :func:`~sandboxd.policy.http_post.post_json`::

    http               POST <url>  body: the context          answer: {"risk_score": 42, "threats": [...],
                                                                        "reason": "..."}
    chat-completions   POST <url>/chat/completions  (an OpenAI-compatible endpoint)
                       body: {"model", "messages": [system: the prompt, user: the context as JSON],
                              "temperature": 0, "response_format": {"type": "json_object"}}
                       answer: choices[0].message.content, which must itself be that JSON object
                       (one Markdown code fence around it is tolerated, nothing else)

Every answer is validated — a number 0-100 for ``risk_score``, a list of strings for ``threats``, a string for
``reason`` — and anything else is an :class:`AssessorError`, which the risk gate turns into a refusal.
"""

from __future__ import annotations

import json
import logging
import math
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sandboxd.base.echo import ECHO_MAX_CHARS, cut
from sandboxd.policy.http_post import HttpError, post_json
from sandboxd.policy.risk_config import RiskConfig

log = logging.getLogger("sandboxd.policy")

MAX_THREATS = 16
REASON_MAX_CHARS = 500
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


class AssessorError(Exception):
    """The assessor gave no usable answer; the message says why (never the API key)."""


@dataclass(frozen=True)
class Assessment:
    risk_score: float
    threats: tuple[str, ...] = ()
    reason: str = ""

    def details(self) -> dict[str, Any]:
        """As the decision record holds it."""
        score: float | int = int(self.risk_score) if self.risk_score.is_integer() else self.risk_score
        return {"risk_score": score, "threats": list(self.threats), "reason": self.reason}


class Assessor(Protocol):
    async def assess(self, context: Mapping[str, Any]) -> Assessment:
        """The assessment of ``context``; raises AssessorError (the caller bounds the time)."""


def parse_assessment(answer: object) -> Assessment:
    """Validate an assessor's answer (parsed JSON)."""
    if not isinstance(answer, dict):
        raise AssessorError(f"the answer is not a JSON object but {type(answer).__name__}")
    score = answer.get("risk_score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score) \
            or not 0 <= score <= 100:
        raise AssessorError(f"risk_score must be a number from 0 to 100, got {cut(repr(score), ECHO_MAX_CHARS)}")
    threats = answer.get("threats", [])
    if not isinstance(threats, list) or not all(isinstance(item, str) for item in threats):
        raise AssessorError(f"threats must be a list of strings, got {cut(repr(threats), ECHO_MAX_CHARS)}")
    reason = answer.get("reason", "")
    if not isinstance(reason, str):
        raise AssessorError(f"reason must be a string, got {cut(repr(reason), ECHO_MAX_CHARS)}")
    return Assessment(float(score), tuple(cut(item, ECHO_MAX_CHARS) for item in threats[:MAX_THREATS]),
                      cut(reason, REASON_MAX_CHARS))


def load_api_key(path: Path) -> str:
    """The key: the file's first line. Raises ValueError saying what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    key = text.split("\n", 1)[0].strip()
    if not key or any(char.isspace() or not char.isprintable() for char in key):
        raise ValueError("its first line must be the API key (printable, no spaces)")
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        log.warning("%s: the assessor's API key is readable by every user of this host: chmod o-rw it", path)
    return key


def _json_body(status: int, body: bytes, what: str) -> Any:
    if not 200 <= status < 300:
        raise AssessorError(f"{what} answered HTTP {status}: {cut(body.decode(errors='replace'), ECHO_MAX_CHARS)}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise AssessorError(f"{what} answered something that is not JSON: "
                            f"{cut(body.decode(errors='replace'), ECHO_MAX_CHARS)!r}") from None


class HttpAssessor:
    """POSTs the context to a URL that answers the assessment itself."""

    def __init__(self, config: RiskConfig, api_key: str = "") -> None:
        self._config = config
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def assess(self, context: Mapping[str, Any]) -> Assessment:
        try:
            status, body = await post_json(self._config.url, json.dumps(context).encode(), headers=self._headers,
                                           max_response_bytes=self._config.max_response_bytes)
        except HttpError as exc:
            raise AssessorError(str(exc)) from None
        return parse_assessment(_json_body(status, body, "the assessor"))


class ChatCompletionsAssessor:
    """Asks a model behind an OpenAI-compatible ``/chat/completions`` endpoint for the assessment."""

    def __init__(self, config: RiskConfig, api_key: str = "") -> None:
        self._config = config
        self._url = config.url.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def request_body(self, context: Mapping[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._config.model,
            "messages": [{"role": "system", "content": self._config.system_prompt},
                         {"role": "user", "content": json.dumps(context, sort_keys=True)}],
            "temperature": 0,
        }
        if self._config.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    async def complete(self, body: Mapping[str, Any]) -> str:
        """The model's answer (the first choice's message content) to a chat-completions request body."""
        try:
            status, raw = await post_json(self._url, json.dumps(body).encode(), headers=self._headers,
                                          max_response_bytes=self._config.max_response_bytes)
        except HttpError as exc:
            raise AssessorError(str(exc)) from None
        answer = _json_body(status, raw, "the chat-completions endpoint")
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise AssessorError("the chat-completions endpoint's answer has no choices[0].message.content") from None
        if not isinstance(content, str):
            raise AssessorError("the model's message content is not text")
        return content

    async def assess(self, context: Mapping[str, Any]) -> Assessment:
        content = (await self.complete(self.request_body(context))).strip()
        fenced = _FENCE.match(content)
        if fenced is not None:
            content = fenced.group(1).strip()
        try:
            answer = json.loads(content)
        except (ValueError, RecursionError):
            raise AssessorError(f"the model's answer is not JSON: {cut(content, ECHO_MAX_CHARS)!r}") from None
        return parse_assessment(answer)


def make_assessor(config: RiskConfig) -> HttpAssessor | ChatCompletionsAssessor:
    """The assessor ``config`` names, its API key read now; ValueError says what is wrong with the key file."""
    key = load_api_key(config.api_key_file) if config.api_key_file is not None else ""
    if config.assessor == "chat-completions":
        return ChatCompletionsAssessor(config, key)
    return HttpAssessor(config, key)
