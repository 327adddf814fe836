"""The launch message the handler-to-be reads (``native/launch.c``): the search path, the argv count, the argv,
then ``KEY=VALUE`` entries, each NUL-terminated; what execve cannot pass is refused with its name."""

from __future__ import annotations

import pytest

from sandboxd.engine.child.launch import DEFAULT_PATH, encode_launch


def test_layout() -> None:
    message = encode_launch(["/bin/echo", "", "x y"], {"PATH": "/bin", "A": "b=c"})
    assert message == b"/bin\x003\x00/bin/echo\x00\x00x y\x00PATH=/bin\x00A=b=c\x00"


def test_the_search_path_without_a_path_variable_is_the_default() -> None:
    assert encode_launch(["true"], {}).split(b"\0")[:2] == [DEFAULT_PATH.encode(), b"1"]


def test_non_ascii_is_utf8() -> None:
    assert "é".encode() in encode_launch(["/bin/echo", "é"], {})


@pytest.mark.parametrize(("argv", "env", "named"), [
    ([], {}, "argv is empty"),
    (["/bin/echo", "a\0b"], {}, "NUL byte"),
    (["/bin/echo"], {"K": "a\0b"}, "NUL byte"),
    (["/bin/echo"], {"A=B": "c"}, "'A=B'"),
    (["/bin/echo"], {"": "c"}, "''"),
])
def test_what_execve_cannot_pass_is_refused(argv: list[str], env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        encode_launch(argv, env)
