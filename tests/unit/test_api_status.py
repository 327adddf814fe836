"""Every refusal maps to one gRPC status code, in one table, with the machine reason in the metadata."""

from __future__ import annotations

import grpc
import pytest

from sandboxd.api.status import (
    INSTANCE_METADATA_KEY,
    REASON_METADATA_KEY,
    RETRY_AFTER_METADATA_KEY,
    STATUS_BY_REASON,
    reason_from_metadata,
    status_for,
    trailing_metadata_for,
)
from sandboxd.base import errors, refusals

C = grpc.StatusCode


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (refusals.UnknownTool("x"), C.NOT_FOUND),
        (refusals.UnknownProfile("x"), C.NOT_FOUND),
        (refusals.UnknownExecution("x"), C.NOT_FOUND),
        (refusals.InvalidParams("x"), C.INVALID_ARGUMENT),
        (refusals.InvalidRequest("x"), C.INVALID_ARGUMENT),
        (refusals.LimitAboveCeiling("x"), C.PERMISSION_DENIED),
        (refusals.PayloadTooLarge("x"), C.INVALID_ARGUMENT),
        (refusals.AuthFailed("x"), C.UNAUTHENTICATED),
        (refusals.ToolNotGranted("x"), C.PERMISSION_DENIED),
        (refusals.GrantExpired("x"), C.PERMISSION_DENIED),
        (refusals.CommandNotGranted("x"), C.PERMISSION_DENIED),
        (refusals.AdminOnly("x"), C.PERMISSION_DENIED),
        (refusals.RateLimited("x", retry_after_s=1.0), C.RESOURCE_EXHAUSTED),
        (refusals.TooManyExecutions("x"), C.RESOURCE_EXHAUSTED),
        (refusals.Draining("x"), C.UNAVAILABLE),
        (errors.InvalidSpec("x"), C.INVALID_ARGUMENT),
        (errors.ConfigError("x"), C.FAILED_PRECONDITION),
        (errors.ProfileError("x"), C.FAILED_PRECONDITION),
        (errors.SpawnerError("x"), C.UNAVAILABLE),
        (errors.CgroupError("x"), C.INTERNAL),
        (errors.SandboxError("x"), C.INTERNAL),
        (errors.SandboxError("x", reason="PERMISSION_DENIED"), C.PERMISSION_DENIED),
        (errors.SandboxError("x", reason="AUTH_FAILED"), C.UNAUTHENTICATED),
        (errors.SandboxError("x", reason="SOMETHING_NEW"), C.INTERNAL),
        (errors.SandboxError("x", reason="SOMETHING_NEW", temporary=True), C.UNAVAILABLE),
    ],
)
def test_status_for(error: errors.SandboxError, code: grpc.StatusCode) -> None:
    assert status_for(error) == code


def test_every_error_class_of_ours_is_in_the_table() -> None:
    classes = [value for value in vars(refusals).values()
               if isinstance(value, type) and issubclass(value, errors.SandboxError)]
    classes += [value for value in vars(errors).values()
                if isinstance(value, type) and issubclass(value, errors.SandboxError)]
    for cls in classes:
        assert cls.reason in STATUS_BY_REASON, cls


def test_reason_travels_in_trailing_metadata() -> None:
    metadata = trailing_metadata_for(refusals.TooManyExecutions("busy"))
    assert (REASON_METADATA_KEY, "TOO_MANY_EXECUTIONS") in metadata
    assert ("sandboxd-temporary", "true") in metadata
    assert reason_from_metadata(metadata) == "TOO_MANY_EXECUTIONS"
    assert reason_from_metadata(None) == ""
    assert reason_from_metadata((("other", "x"),)) == ""


def test_a_refusal_names_the_daemon_and_the_client_reads_it_back() -> None:
    from sandboxd.cli.errors import SandboxdError

    metadata = trailing_metadata_for(refusals.RateLimited("slow down", retry_after_s=0.25), instance="node-a")
    assert (INSTANCE_METADATA_KEY, "node-a") in metadata
    assert INSTANCE_METADATA_KEY not in dict(trailing_metadata_for(refusals.Draining("x")))

    class Refused(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return C.RESOURCE_EXHAUSTED

        def details(self) -> str:
            return "slow down"

        def trailing_metadata(self) -> object:
            return metadata

    error = SandboxdError.from_rpc_error(Refused())
    assert (error.reason, error.temporary, error.instance, error.retry_after_s) == ("RATE_LIMITED", True, "node-a",
                                                                                    0.25)


def test_rate_limited_says_when_to_retry_rounded_up_to_the_millisecond() -> None:
    metadata = dict(trailing_metadata_for(refusals.RateLimited("slow down", retry_after_s=0.6, role="analyst")))
    assert metadata == {REASON_METADATA_KEY: "RATE_LIMITED", "sandboxd-temporary": "true",
                        RETRY_AFTER_METADATA_KEY: "0.6"}
    assert dict(trailing_metadata_for(refusals.RateLimited("x", retry_after_s=0.0001)))[
        RETRY_AFTER_METADATA_KEY] == "0.001"
    assert RETRY_AFTER_METADATA_KEY not in dict(trailing_metadata_for(refusals.ToolNotGranted("x")))


def test_policy_refusals_carry_the_matched_role() -> None:
    assert refusals.LimitAboveCeiling("x", role="analyst").role == "analyst"
    assert refusals.ToolNotGranted("x").role == ""
    assert isinstance(refusals.PayloadTooLarge("x"), refusals.PolicyDenied)
