"""The refusals a request can meet before anything runs — requests, tools, callers, admission.

Each is a :class:`~sandboxd.base.errors.SandboxError` with a machine ``reason``; the API layer maps reasons
to gRPC status codes in one table (:mod:`sandboxd.api.status`). They live in the base layer because the
policy and the server raise them and neither may import the API.

The policy's refusals (:class:`PolicyDenied` and its subclasses) carry the ``role`` that matched, ``""``
when none did, for the audit record of the decision.
"""

from __future__ import annotations

from sandboxd.base.errors import SandboxError


class UnknownTool(SandboxError):
    reason = "UNKNOWN_TOOL"


class UnknownProfile(SandboxError):
    reason = "UNKNOWN_PROFILE"


class UnknownExecution(SandboxError):
    reason = "EXECUTION_NOT_FOUND"


class InvalidRequest(SandboxError):
    """The request itself is malformed: no target, an empty argv, a limit of zero …"""

    reason = "INVALID_REQUEST"


class InvalidParams(SandboxError):
    """Params are not a JSON object or do not match the tool's schema; ``json_path`` names the first."""

    reason = "INVALID_PARAMS"

    def __init__(self, message: str, *, json_path: str = "$") -> None:
        super().__init__(message)
        self.json_path = json_path


class AuthFailed(SandboxError):
    """The caller has no identity we accept. The message says what was wrong, never the credential."""

    reason = "AUTH_FAILED"


class PolicyDenied(SandboxError):
    """A refusal by the policy; ``role`` is the caller's role that matched the request (``""``: none)."""

    reason = "PERMISSION_DENIED"

    def __init__(self, message: str, *, role: str = "") -> None:
        super().__init__(message)
        self.role = role

    def audit_details(self) -> dict[str, object]:
        """What the decision record says besides the reason and message (JSON values)."""
        return {}


class ToolNotGranted(PolicyDenied):
    reason = "TOOL_NOT_GRANTED"


class GrantExpired(PolicyDenied):
    """The only grants of the tool the caller's roles hold have expired."""

    reason = "GRANT_EXPIRED"


class CommandNotGranted(PolicyDenied):
    """A raw command, and none of the caller's roles has ``commands = true``."""

    reason = "COMMAND_NOT_GRANTED"


class LimitAboveCeiling(PolicyDenied):
    """A per-call limit asks for more than the tool, the role (or the daemon, for raw commands) allows."""

    reason = "LIMIT_ABOVE_CEILING"


class PayloadTooLarge(PolicyDenied):
    """The request is larger than the role's ``max_payload`` (or the daemon's ``max_request_bytes``)."""

    reason = "PAYLOAD_TOO_LARGE"


class RateLimited(PolicyDenied):
    """The role's rate for this principal is used up; ``retry_after_s`` says when the next request passes."""

    reason = "RATE_LIMITED"
    temporary = True

    def __init__(self, message: str, *, retry_after_s: float, role: str = "") -> None:
        super().__init__(message, role=role)
        self.retry_after_s = retry_after_s


class ParamsNotGranted(PolicyDenied):
    """The tool is granted, but no grant's params constraint admits these params; ``json_path`` and ``rule``
    (the constraint's schema path, ``properties.path.pattern``) name the first thing the best grant refused."""

    reason = "PARAMS_NOT_GRANTED"

    def __init__(self, message: str, *, json_path: str = "$", rule: str = "", role: str = "") -> None:
        super().__init__(message, role=role)
        self.json_path = json_path
        self.rule = rule

    def audit_details(self) -> dict[str, object]:
        return {"json_path": self.json_path, "rule": self.rule}


class MfaRequired(PolicyDenied):
    """The role granting the tool requires a token claim the caller's identity does not carry (``amr`` ∋ ``mfa``)."""

    reason = "MFA_REQUIRED"


class ClassificationDenied(PolicyDenied):
    """The tool's classification is above the clearance of every role granting it."""

    reason = "CLASSIFICATION_DENIED"


class RiskTooHigh(PolicyDenied):
    """The risk assessor scored the request above the role's threshold; ``assessment`` is what it said."""

    reason = "RISK_TOO_HIGH"

    def __init__(self, message: str, *, assessment: dict[str, object], role: str = "") -> None:
        super().__init__(message, role=role)
        self.assessment = assessment

    def audit_details(self) -> dict[str, object]:
        return {"risk": self.assessment}


class RiskUnavailable(PolicyDenied):
    """The risk assessor did not answer usably (timeout, error, garbage, too busy): refused, failing closed."""

    reason = "RISK_UNAVAILABLE"
    temporary = True

    def __init__(self, message: str, *, assessment: dict[str, object], role: str = "") -> None:
        super().__init__(message, role=role)
        self.assessment = assessment

    def audit_details(self) -> dict[str, object]:
        return {"risk": self.assessment}


class AdminOnly(PolicyDenied):
    """What only a role with ``admin = true`` may do: the audit stream, another principal's executions."""

    reason = "ADMIN_ONLY"


class UnknownGrant(SandboxError):
    """No runtime grant by that id (revoked, expired, or never made)."""

    reason = "GRANT_NOT_FOUND"


class TooManyExecutions(SandboxError):
    reason = "TOO_MANY_EXECUTIONS"
    temporary = True


class UnknownSession(SandboxError):
    """No session by that id that the caller may use (another principal's reads the same: not enumerable)."""

    reason = "SESSION_NOT_FOUND"


class TooManySessions(SandboxError):
    reason = "TOO_MANY_SESSIONS"
    temporary = True


class SessionFailed(SandboxError):
    """The session's sandbox could not be built: nothing of it is left."""

    reason = "SESSION_FAILED"


class FileRefusal(SandboxError):
    """A session file path or file refused: outside /work, through a symlink, not a regular file, too large."""

    reason = "FILE_REFUSED"


class Draining(SandboxError):
    """The daemon is stopping: it finishes what runs and accepts nothing new."""

    reason = "DRAINING"
    temporary = True
