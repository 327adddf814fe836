"""The risk gate: ask the configured assessor about a request its role wants assessed, and refuse above the
role's threshold — or, failing closed, when no usable answer comes.

For a request the policy allowed, whose role has ``risk_threshold``::

    cached answer for (principal, tool, params digest), younger than cache_ttl?  → use it
    else one assessment (an identical one already in flight is shared, not repeated):
        a slot of max_in_flight, then the assessor's answer, all within timeout
    answer  score > threshold                         → RISK_TOO_HIGH (the assessor's reason)
            score <= threshold                        → allowed
    none (timeout, error, garbage, no slot in time)   → RISK_UNAVAILABLE, unless risk_on_error = "allow"

Either way the decision record carries what happened (:meth:`RiskGate.check` returns it, the refusals hold it).
Everything is asyncio: a slow assessor delays only the requests waiting for it, never the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sandboxd.base.refusals import RiskTooHigh, RiskUnavailable
from sandboxd.policy.assessors import Assessment, Assessor, AssessorError, make_assessor
from sandboxd.policy.auth import Identity
from sandboxd.policy.config import RoleConfig
from sandboxd.policy.risk_config import RiskConfig

# (result, seconds the assessor took or None): result is "ok", "cached", "error", "timeout" or "busy"
Observer = Callable[[str, float | None], None]


def digest(value: object) -> str:
    """SHA-256 of the canonical JSON of ``value`` (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class RiskRequest:
    """What the assessor is told of one request, and the key its answer is cached under."""

    context: Mapping[str, Any]
    cache_key: Hashable

    @classmethod
    def of(cls, identity: Identity, *, role: str, tool: str, params: Mapping[str, Any] | None,
           argv: Sequence[str] | None, labels: Mapping[str, str], request_id: str,
           send_params: str) -> RiskRequest:
        """``params`` for a tool call, ``argv`` for a raw command (``tool`` ""); ``send_params``: "full" or
        "digest" (their SHA-256 only)."""
        what: Any = dict(params or {}) if argv is None else list(argv)
        name = "params" if argv is None else "command"
        context: dict[str, Any] = {
            "request_id": request_id, "principal": identity.principal, "roles": list(identity.roles),
            "role": role, "tool": tool, "labels": dict(labels),
        }
        context[name if send_params == "full" else f"{name}_sha256"] = what if send_params == "full" else digest(what)
        return cls(context, (identity.principal, tool, digest(what)))


class _Failed(Exception):
    def __init__(self, result: str, message: str) -> None:
        super().__init__(message)
        self.result = result


class RiskGate:
    """One daemon generation's assessor, its cache and its bound on assessments in flight."""

    def __init__(self, config: RiskConfig, assessor: Assessor, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 cache: OrderedDict[Hashable, tuple[float, Assessment]] | None = None,
                 slots: asyncio.Semaphore | None = None) -> None:
        self.config = config
        self._assessor = assessor
        self._monotonic = monotonic
        self._cache: OrderedDict[Hashable, tuple[float, Assessment]] = cache if cache is not None else OrderedDict()
        self._slots = slots if slots is not None else asyncio.Semaphore(config.max_in_flight)
        self._pending: dict[Hashable, asyncio.Task[tuple[Assessment, float]]] = {}

    @classmethod
    def build(cls, config: RiskConfig, previous: RiskGate | None = None) -> RiskGate:
        """The gate of ``config`` (its API key read now: ValueError says what is wrong). When the previous
        generation's config was the same, its cache and slots carry over: a reload refills nothing."""
        assessor = make_assessor(config)
        if previous is not None and previous.config == config:
            return cls(config, assessor, cache=previous._cache, slots=previous._slots)
        return cls(config, assessor)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def check(self, role: RoleConfig, request: RiskRequest, *,
                    observe: Observer | None = None) -> dict[str, Any]:
        """What the decision record says of the assessment; raises RISK_TOO_HIGH or RISK_UNAVAILABLE."""
        threshold = role.risk_threshold
        if threshold is None:
            return {}
        notify: Observer = observe or (lambda result, seconds: None)
        cached = self._cached(request.cache_key)
        try:
            if cached is not None:
                notify("cached", None)
                assessment, latency_s = cached, 0.0
            else:
                assessment, latency_s = await self._assess(request, notify)
        except _Failed as failure:
            details: dict[str, Any] = {"threshold": threshold, "error": str(failure),
                                       "on_error": role.risk_on_error}
            if role.risk_on_error == "allow":
                return {"risk": details}
            raise RiskUnavailable(
                f"the risk assessor gave no usable answer ({failure}); role {role.name!r} refuses then "
                f"(risk_on_error = \"deny\")", assessment=details, role=role.name) from None
        details = {**assessment.details(), "threshold": threshold, "cached": cached is not None}
        if cached is None:
            details["latency_ms"] = round(latency_s * 1000)
        if assessment.risk_score > threshold:
            raise RiskTooHigh(
                f"the risk assessor scored this request {details['risk_score']}, above role {role.name!r}'s "
                f"risk_threshold of {threshold}: {assessment.reason or 'no reason given'}",
                assessment=details, role=role.name)
        return {"risk": details}

    def _cached(self, key: Hashable) -> Assessment | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires_at, assessment = entry
        if self._monotonic() >= expires_at:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return assessment

    async def _assess(self, request: RiskRequest, notify: Observer) -> tuple[Assessment, float]:
        task = self._pending.get(request.cache_key)
        if task is None:  # the first asker starts it; later ones with the same key share it
            task = asyncio.create_task(self._ask(request.context, notify))
            self._pending[request.cache_key] = task
            task.add_done_callback(lambda _: self._settled(request.cache_key, task))
        # shielded: a caller that goes away does not cancel the answer others wait for (it ends by the timeout)
        return await asyncio.shield(task)

    def _settled(self, key: Hashable, task: asyncio.Task[tuple[Assessment, float]]) -> None:
        if self._pending.get(key) is task:
            del self._pending[key]
        if task.cancelled() or task.exception() is not None or self.config.cache_ttl_ms <= 0:
            return
        self._cache[key] = (self._monotonic() + self.config.cache_ttl_ms / 1000, task.result()[0])
        self._cache.move_to_end(key)
        while len(self._cache) > self.config.cache_entries:
            self._cache.popitem(last=False)

    async def _ask(self, context: Mapping[str, Any], notify: Observer) -> tuple[Assessment, float]:
        timeout_s = self.config.timeout_ms / 1000
        began = self._monotonic()
        asked_at: float | None = None
        try:
            async with asyncio.timeout(timeout_s), self._slots:
                asked_at = self._monotonic()
                assessment = await self._assessor.assess(context)
        except TimeoutError:
            if asked_at is None:
                notify("busy", None)
                raise _Failed("busy", f"no slot within {self.config.timeout_ms} ms: "
                                      f"{self.config.max_in_flight} assessments in flight") from None
            notify("timeout", self._monotonic() - asked_at)
            raise _Failed("timeout", f"no answer within {self.config.timeout_ms} ms") from None
        except AssessorError as exc:
            notify("error", self._monotonic() - (asked_at or began))
            raise _Failed("error", str(exc)) from None
        except Exception as exc:  # a bug of ours or a surprise of the library: still no answer, still refused
            notify("error", self._monotonic() - (asked_at or began))
            raise _Failed("error", f"{type(exc).__name__}: {exc}") from None
        latency_s = self._monotonic() - asked_at
        notify("ok", latency_s)
        return assessment, latency_s
