"""Role conditions: a required JWT claim (MFA_REQUIRED) and a clearance over tool classifications
(CLASSIFICATION_DENIED), their configuration errors naming file and key, and the labels checked at load."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from sandboxd.api.status import status_for
from sandboxd.base.errors import ConfigError
from sandboxd.base.limits import Limits
from sandboxd.base.refusals import ClassificationDenied, MfaRequired, ParamsNotGranted, PolicyDenied
from sandboxd.base.toml import TomlTable
from sandboxd.policy.auth import Identity
from sandboxd.policy.conditions import check_tool_classifications
from sandboxd.policy.config import PolicyConfig, parse_policy
from sandboxd.policy.decisions import Decision, Policy
from sandboxd.policy.settings import DEFAULT_CLASSIFICATIONS

FILE = "/etc/sandboxd/sandboxd.toml"

CONFIG = """
[auth]
unix_socket_principal = ""

[principals.ops]
roles = ["operator"]

[policy]
classifications = ["public", "internal", "confidential", "secret"]
unclassified = "confidential"

[roles.operator]
tools = ["*"]
require_claims = { amr = "mfa" }

[roles.analyst]
tools = ["*"]
clearance = "internal"

[roles.auditor]
tools = [{ name = "ledger", params = { properties = { year = { minimum = 2020 } } } }]
clearance = "secret"
require_claims = { amr = "mfa", department = "finance" }
"""


def parse(text: str) -> PolicyConfig:
    top = TomlTable(tomllib.loads(text), file=FILE)
    policy = parse_policy(top)
    top.finish()
    return policy


def make() -> Policy:
    return Policy(parse(CONFIG), clock=lambda: 1.9e9, monotonic=lambda: 1.0)


def jwt_caller(*roles: str, **claims: Any) -> Identity:
    return Identity("jwt:alice", roles, "jwt", claims)


def decide(policy: Policy, identity: Identity, tool: str = "ledger", classification: str | None = "",
           params: dict[str, Any] | None = None) -> Decision:
    return policy.decide(identity, tool=tool, requested=None, tool_limits=Limits(), payload_bytes=1,
                         params=params, classification=classification)


def denied(error: type[PolicyDenied], policy: Policy, identity: Identity, **kwargs: Any) -> PolicyDenied:
    with pytest.raises(error) as caught:
        decide(policy, identity, **kwargs)
    assert status_for(caught.value).name == "PERMISSION_DENIED"
    return caught.value


@pytest.mark.parametrize("amr", [["pwd", "mfa"], "mfa"])
def test_a_required_claim_held_passes(amr: object) -> None:
    assert decide(make(), jwt_caller("operator", amr=amr)).role == "operator"


@pytest.mark.parametrize("claims", [{}, {"amr": ["pwd"]}, {"amr": "pwd"}, {"amr": ["MFA"]}])
def test_a_required_claim_missing_is_mfa_required(claims: dict[str, Any]) -> None:
    error = denied(MfaRequired, make(), jwt_caller("operator", **claims))
    assert (error.reason, error.role) == ("MFA_REQUIRED", "operator")
    assert "amr claim holds 'mfa'" in error.message


def test_a_caller_without_a_token_has_no_claims() -> None:
    error = denied(MfaRequired, make(), Identity("ops", ("operator",), "static-token"))
    assert "authenticated by static-token, which carries no token claims" in error.message


def test_every_required_claim_counts() -> None:
    policy = make()
    error = denied(MfaRequired, policy, jwt_caller("auditor", amr=["mfa"], department="sales"))
    assert "department claim holds 'finance'" in error.message
    assert decide(policy, jwt_caller("auditor", amr=["mfa"], department="finance")).role == "auditor"


@pytest.mark.parametrize(("label", "allowed"), [("public", True), ("internal", True), ("confidential", False),
                                                 ("secret", False), ("", False)])
def test_clearance_against_the_tools_classification(label: str, allowed: bool) -> None:
    policy = make()
    if allowed:
        assert decide(policy, jwt_caller("analyst"), classification=label).role == "analyst"
        return
    error = denied(ClassificationDenied, policy, jwt_caller("analyst"), classification=label)
    assert (error.reason, error.role) == ("CLASSIFICATION_DENIED", "analyst")
    assert "above role 'analyst''s clearance 'internal'" in error.message
    if not label:
        assert "unclassified (which counts as 'confidential')" in error.message


def test_an_unknown_tool_is_not_refused_for_its_classification() -> None:
    """check_grant before the tool is looked up (an absent tool) has no label to look at."""
    make().check_grant(jwt_caller("analyst"), "nothing_here")


def test_a_role_that_meets_its_conditions_grants_where_another_does_not() -> None:
    policy = make()
    assert decide(policy, jwt_caller("operator", "analyst"), classification="public").role == "analyst"
    # the closest refusal: the params of a role whose conditions hold, over a condition unmet
    error = denied(ParamsNotGranted, policy, jwt_caller("analyst", "auditor", amr="mfa", department="finance"),
                   classification="secret", params={"year": 1999})
    assert error.role == "auditor"


def test_visible_tools_leave_out_what_the_conditions_refuse() -> None:
    policy = make()
    labels = {"report": "public", "ledger": "secret", "notes": ""}
    assert policy.visible_tools(jwt_caller("analyst"), list(labels), labels) == ["report"]
    assert policy.visible_tools(jwt_caller("operator"), list(labels), labels) == []
    assert policy.visible_tools(jwt_caller("operator", amr=["mfa"]), list(labels), labels) == list(labels)


def test_the_default_classifications() -> None:
    policy = parse('[auth]\nunix_socket_principal = ""\n[principals.p]\nroles = ["r"]\n'
                   '[roles.r]\nclearance = "internal"\n')
    assert policy.classifications.levels == DEFAULT_CLASSIFICATIONS
    assert policy.classifications.unclassified == "restricted"  # the highest: an unlabelled tool fails closed


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        ('[roles.r]\nclearance = "top"\n', "roles.r.clearance", "'top' is not one of the classifications"),
        ('[roles.r]\nrequire_claims = { amr = "" }\n', "roles.r.require_claims.amr", "the value the claim must hold"),
        ('[roles.r]\nrequire_claims = { amr = ["mfa"] }\n', "roles.r.require_claims.amr", "expected a string"),
        ('[policy]\nclassifications = []\n', "policy.classifications", "at least one"),
        ('[policy]\nclassifications = ["a", "a"]\n', "policy.classifications", "names a label twice"),
        ('[policy]\nclassifications = ["Top Secret"]\n', "policy.classifications", "is not a label"),
        ('[policy]\nunclassified = "secret"\n', "policy.unclassified", "'secret' is not one of classifications"),
        ('[policy]\nlevels = ["a"]\n', "policy.levels", "unknown key"),
    ],
)
def test_errors_name_the_file_and_the_key(text: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse('[auth]\nunix_socket_principal = ""\n' + text)
    assert caught.value.message.startswith(f"{FILE}: {key}: "), caught.value.message
    assert says in caught.value.message, caught.value.message


def test_tool_labels_are_checked_at_load() -> None:
    policy = parse(CONFIG)
    check_tool_classifications(policy, {"report": ("public", None), "notes": ("", None)})
    with pytest.raises(ConfigError) as caught:
        check_tool_classifications(policy, {"ledger": ("top-secret", Path("/etc/sandboxd/tools/ledger.toml"))})
    assert caught.value.message.startswith("/etc/sandboxd/tools/ledger.toml: classification: 'top-secret' is not")
