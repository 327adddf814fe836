"""The [auth], [principals.*] and [roles.*] tables: defaults, the full shape, and errors naming file and key."""

from __future__ import annotations

import datetime
import hashlib
import re
import tomllib

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.base.toml import TomlTable
from sandboxd.policy.config import (
    DEFAULT_POLICY,
    EMBEDDED,
    AuthConfig,
    Grant,
    PolicyConfig,
    check_policy,
    parse_policy,
)
from sandboxd.policy.ratelimit import Rate

FILE = "/etc/sandboxd/sandboxd.toml"
TOOLS = ("file_processor", "sqlite_query", "python")
TOKEN_HASH = hashlib.sha256(b"s3cret-token").hexdigest()
NO_SOCKET_PRINCIPAL = '[auth]\nunix_socket_principal = ""\n'


def parse(text: str) -> PolicyConfig:
    top = TomlTable(tomllib.loads(text), file=FILE)
    policy = parse_policy(top)
    top.finish()  # what load_config does after: nothing of ours is left over
    return policy


def refused(text: str, key: str, *, tools: tuple[str, ...] | None = None) -> str:
    """The message of the ConfigError ``text`` raises; it must name the file and the dotted key."""
    with pytest.raises(ConfigError) as caught:
        policy = parse(text)
        if tools is not None:
            check_policy(policy, tools, FILE)
    message = caught.value.message
    assert message.startswith(f"{FILE}: {key}: "), message
    return message


def test_the_embedded_defaults() -> None:
    policy = DEFAULT_POLICY
    assert policy.auth == AuthConfig(unix_socket_principal="local-admin")
    assert set(policy.roles) == {"customer-service", "analyst", "admin"}
    service, analyst, admin = policy.roles["customer-service"], policy.roles["analyst"], policy.roles["admin"]
    assert [g.pattern for g in service.tools] == ["file_processor", "sqlite_query"]
    assert service.rate == Rate(100, 20) and not service.commands and not service.admin
    assert [g.pattern for g in analyst.tools] == ["sqlite_query"]
    assert analyst.rate == Rate(50, 10) and analyst.max_payload_bytes == 1024 * 1024
    assert admin.tools == (Grant("*"),) and admin.commands and admin.admin and admin.rate == Rate(1000, 200)
    assert policy.principals["local-admin"].roles == ("admin",)
    assert policy.embedded_roles and policy.embedded_principals and policy.source == EMBEDDED
    check_policy(policy, TOOLS, EMBEDDED)
    check_policy(policy, (), EMBEDDED)  # shipped_tools = false: the embedded roles name absent tools, harmlessly


def test_a_file_without_policy_tables_keeps_the_defaults() -> None:
    policy = parse("")
    assert policy.roles == DEFAULT_POLICY.roles and policy.principals == DEFAULT_POLICY.principals
    assert policy.source == FILE


def test_the_full_shape() -> None:
    policy = parse(f"""
        [auth]
        unix_socket_principal = ""
        jwt_key_file = "/etc/sandboxd/jwt.key"
        jwt_issuer = "https://gateway.example"
        jwt_audience = "sandboxd"
        jwt_leeway = "10s"
        jwt_algorithms = ["HS256"]

        [principals.gateway]
        roles = ["customer-service", "analyst"]
        certificate_subjects = ["CN=gateway.example,O=Example", "emailAddress=ops@example.com,CN=ops"]
        token_sha256 = ["{TOKEN_HASH.upper()}"]

        [roles.customer-service]
        tools = ["file_processor", {{ name = "sqlite_*", expires = 2027-01-01T01:00:00+01:00 }}]
        commands = false
        rate_per_minute = 100
        burst = 5
        max_payload = "64K"
        max_concurrent = 8
        limits_above_ceiling = "clamp"
        [roles.customer-service.ceilings]
        memory = "128M"
        wall_time = "5s"
        output = "64K"

        [roles.analyst]
        tools = ["sqlite_query"]
    """)
    auth = policy.auth
    assert auth.unix_socket_principal == "" and str(auth.jwt_key_file) == "/etc/sandboxd/jwt.key"
    assert (auth.jwt_issuer, auth.jwt_audience, auth.jwt_leeway_ms, auth.jwt_algorithms) == (
        "https://gateway.example", "sandboxd", 10_000, ("HS256",))
    gateway = policy.principals["gateway"]
    assert gateway.roles == ("customer-service", "analyst")
    assert gateway.certificate_subjects == ("CN=gateway.example,O=Example", "emailAddress=ops@example.com,CN=ops")
    assert gateway.token_sha256 == (TOKEN_HASH,)  # lower-cased
    role = policy.roles["customer-service"]
    expiry = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC).timestamp()
    assert role.tools == (Grant("file_processor"), Grant("sqlite_*", expiry))
    assert role.rate == Rate(100, 5) and role.max_payload_bytes == 64 * 1024 and role.max_concurrent == 8
    assert role.limits_above_ceiling == "clamp"
    assert role.ceilings == {"memory_max_bytes": 128 * 1024**2, "wall_time_ms": 5000, "output_max_bytes": 65536}
    analyst = policy.roles["analyst"]
    assert analyst.rate is None and analyst.max_payload_bytes is None and analyst.ceilings == {}
    assert set(policy.roles) == {"customer-service", "analyst"}  # [roles] replaced the embedded ones
    assert not policy.embedded_roles and not policy.embedded_principals
    check_policy(policy, TOOLS, FILE)


def test_principals_alone_may_use_the_embedded_roles() -> None:
    policy = parse("""
        [principals.local-admin]
        roles = ["admin"]
        [principals.gateway]
        roles = ["customer-service"]
    """)
    assert policy.roles == DEFAULT_POLICY.roles
    assert set(policy.principals) == {"local-admin", "gateway"}
    check_policy(policy, TOOLS, FILE)


def test_roles_alone_must_keep_the_embedded_principal_valid() -> None:
    policy = parse("""
        [roles.admin]
        tools = ["*"]
        commands = true
        admin = true
    """)
    assert policy.principals == DEFAULT_POLICY.principals
    with pytest.raises(ConfigError) as caught:
        parse('[roles.ops]\ntools = ["python"]\n')
    assert caught.value.message == (
        f"{EMBEDDED}: principals.local-admin.roles: no role named 'admin' "
        f"({FILE}'s [roles] replaced the embedded roles: define one named 'admin')"
    )


def test_the_socket_principal_must_exist() -> None:
    message = refused('[principals.gateway]\nroles = ["analyst"]\n', "auth.unix_socket_principal")
    assert "no principal named 'local-admin'" in message and "[principals] replaced" in message
    policy = parse('[auth]\nunix_socket_principal = ""\n[principals.gateway]\nroles = ["analyst"]\n')
    assert policy.auth.unix_socket_principal == ""


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        ('[principals.x]\nroles = ["nope"]\n', "principals.x.roles", "no role named 'nope'"),
        ('[roles.analyst]\ntools = ["sqlite_query"]\ncolour = "red"\n', "roles.analyst.colour", "unknown key"),
        ('[principals.x]\nrole = ["analyst"]\n', "principals.x.role", "unknown key"),
        ('[auth]\njwt_secret = "x"\n', "auth.jwt_secret", "unknown key"),
        ('[roles.r]\ntools = [{ name = "python", expires = 2027-01-01T00:00:00 }]\n', "roles.r.tools[0].expires",
         "has no UTC offset"),
        ('[roles.r]\ntools = [{ name = "python", expires = 2027-01-01 }]\n', "roles.r.tools[0].expires",
         "is a date"),
        ('[roles.r]\ntools = [{ name = "python", expires = "2027-01-01T00:00:00Z" }]\n',
         "roles.r.tools[0].expires", "unquoted"),
        ('[roles.r]\ntools = [{ name = "python", until = 2027-01-01T00:00:00Z }]\n', "roles.r.tools[0].until",
         "unknown key"),
        ('[roles.r]\ntools = [{ expires = 2027-01-01T00:00:00Z }]\n', "roles.r.tools[0].name", "required"),
        ('[roles.r]\ntools = ["Python Tool"]\n', "roles.r.tools[0]", "not a tool name or glob"),
        ('[roles.r]\ntools = [3]\n', "roles.r.tools[0]", "expected a tool name"),
        ('[roles.r]\ntools = "python"\n', "roles.r.tools", "expected a list"),
        ('[roles.r]\nburst = 3\n', "roles.r.burst", "without rate_per_minute"),
        ('[roles.r]\nrate_per_minute = 0\n', "roles.r.rate_per_minute", "between 1 and"),
        ('[roles.r]\nlimits_above_ceiling = "ignore"\n', "roles.r.limits_above_ceiling", '"deny" or "clamp"'),
        ('[roles.r]\nmax_payload = "lots"\n', "roles.r.max_payload", "not a number"),
        ('[roles.r]\nmax_concurrent = 0\n', "roles.r.max_concurrent", "between 1 and 4096"),
        ('[roles.r.ceilings]\nmemory = "unlimited"\n', "roles.r.ceilings.memory", "leave the key out"),
        ('[roles.r.ceilings]\nwall_time = 30\n', "roles.r.ceilings.wall_time", "write it with a unit"),
        ('[roles.r.ceilings]\nmemroy = "1G"\n', "roles.r.ceilings.memroy", "unknown key"),
        ('[roles.r]\ncommands = "yes"\n', "roles.r.commands", "true or false"),
        ('[roles."a b"]\n', "roles.a b", "not a role name"),
        ('[principals.x]\ntoken_sha256 = ["my-plain-token"]\n', "principals.x.token_sha256", "64 hex digits"),
        ('[principals.x]\ncertificate_subjects = ["gateway.example"]\n', "principals.x.certificate_subjects",
         "not an RFC 4514 subject"),
        (f'[principals.x]\ntoken_sha256 = ["{TOKEN_HASH}"]\n[principals.y]\ntoken_sha256 = ["{TOKEN_HASH}"]\n',
         "principals.y.token_sha256", "also principal 'x'"),
        ('[principals.x]\ncertificate_subjects = ["CN=a+UID=u,O=b"]\n'
         '[principals.y]\ncertificate_subjects = ["UID=u+CN=a,O=b"]\n',
         "principals.y.certificate_subjects", "'UID=u+CN=a,O=b' is also principal 'x'"),
        ('[principals.x]\ncertificate_subjects = ["CN=a, O=b"]\n', "principals.x.certificate_subjects",
         "(no space after a comma)"),
        ('[auth]\njwt_key_file = "/k"\njwt_audience = "sandboxd"\n', "auth.jwt_issuer", "required with jwt_key_file"),
        ('[auth]\njwt_key_file = "/k"\njwt_issuer = "i"\n', "auth.jwt_audience", "required with jwt_key_file"),
        ('[auth]\njwt_issuer = "i"\n', "auth.jwt_issuer", "no effect without jwt_key_file"),
        ('[auth]\njwt_key_file = "jwt.key"\n', "auth.jwt_key_file", "absolute path"),
        ('[auth]\njwt_key_file = "/k"\njwt_issuer = "i"\njwt_audience = "a"\njwt_algorithms = ["none"]\n',
         "auth.jwt_algorithms", "'none' is not one of HS256, RS256, ES256"),
        ('[auth]\njwt_key_file = "/k"\njwt_issuer = "i"\njwt_audience = "a"\njwt_leeway = "1h"\n',
         "auth.jwt_leeway", "at most"),
    ],
)
def test_errors_name_the_file_and_the_key(text: str, key: str, says: str) -> None:
    if text.startswith("[principals"):  # they replace the embedded principals, local-admin among them
        text = NO_SOCKET_PRINCIPAL + text
    message = refused(text, key)
    assert says in message, message


def test_a_pasted_token_is_not_repeated_in_the_error() -> None:
    message = refused('[auth]\nunix_socket_principal = ""\n[principals.x]\ntoken_sha256 = ["hunter2-hunter2"]\n',
                      "principals.x.token_sha256")
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("tools", "key", "says"),
    [
        ('["sqlite_qurey"]', "roles.r.tools[0]", "no tool named 'sqlite_qurey' (tools: file_processor, python, "
                                                  "sqlite_query)"),
        ('["python", "shell_*"]', "roles.r.tools[1]", "the glob 'shell_*' matches no tool"),
        ('[{ name = "pyhton", expires = 2030-01-01T00:00:00Z }]', "roles.r.tools[0]", "no tool named 'pyhton'"),
    ],
)
def test_unknown_tools_are_refused_at_start(tools: str, key: str, says: str) -> None:
    text = f'[roles.r]\ntools = {tools}\n[principals.local-admin]\nroles = ["r"]\n'
    message = refused(text, key, tools=TOOLS)
    assert says in message, message


def test_check_policy_names_the_file_it_is_given() -> None:
    policy = parse('[roles.r]\ntools = ["nope"]\n[principals.local-admin]\nroles = ["r"]\n')
    with pytest.raises(ConfigError, match=re.escape("/elsewhere.toml: roles.r.tools[0]: no tool named 'nope'")):
        check_policy(policy, TOOLS, "/elsewhere.toml")
