"""The README's engine example runs as printed: extracted from README.md and run by the venv's python."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.root


def _engine_example() -> str:
    readme = (REPO / "README.md").read_text()
    after = readme.split("The engine is usable from Python without the daemon:", 1)[1]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match, "the README lost its engine example"
    return match.group(1)


def test_the_readme_engine_example_runs() -> None:
    done = subprocess.run([sys.executable, "-c", _engine_example()], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "data=b'42\\n'" in done.stdout, done.stdout
    assert "status=<Status.OK: 'OK'>" in done.stdout, done.stdout
