"""The package's native part: the sandbox's spawner and waiter (``sandboxd/engine/child/native``, see
``sandboxd.engine.child.program``), compiled as part of ``build`` — into the wheel, or next to their sources
for an editable install — static, so that they need nothing inside a sandbox's root. The rest of the project's
metadata is in ``pyproject.toml``."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import ClassVar

from setuptools import Command, setup
from setuptools.command.build import build
from setuptools.dist import Distribution

NATIVE = Path("sandboxd/engine/child/native")
PROGRAMS = {  # output: its sources
    "sandboxd-spawn": ("spawner.c", "waiter.c", "sandbox.c", "rootfs.c", "init.c", "launch.c", "watch.c", "plan.c",
                       "cgroup.c", "steps.c", "process.c"),
}
CFLAGS = ["-std=gnu11", "-O2", "-static", "-Wall", "-Wextra", "-Werror", "-fstack-protector-strong",
          "-D_FORTIFY_SOURCE=2"]


class BuildNative(Command):
    description = "compile the sandbox's native program"
    user_options: ClassVar[list[tuple[str, str | None, str]]] = []
    editable_mode = False  # set by setuptools for `pip install -e`: build next to the sources

    def initialize_options(self) -> None:
        self.build_lib: str | None = None

    def finalize_options(self) -> None:
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def _out_dir(self) -> Path:
        return NATIVE if self.editable_mode else Path(str(self.build_lib)) / NATIVE

    def run(self) -> None:
        out_dir = self._out_dir()
        out_dir.mkdir(parents=True, exist_ok=True)
        compiler = shlex.split(os.environ.get("CC", "cc"))
        for name, sources in PROGRAMS.items():
            command = [*compiler, *CFLAGS, "-o", str(out_dir / name), *(str(NATIVE / source) for source in sources)]
            print(" ".join(command))
            subprocess.run(command, check=True)
            (out_dir / name).chmod(0o755)

    def get_outputs(self) -> list[str]:
        return [str(self._out_dir() / name) for name in PROGRAMS]

    def get_output_mapping(self) -> dict[str, str]:
        return {}

    def get_source_files(self) -> list[str]:
        return [str(p) for p in sorted(NATIVE.glob("*.[ch]"))]


class NativeDistribution(Distribution):
    def has_ext_modules(self) -> bool:  # a platform wheel: it holds compiled programs
        return True


build.sub_commands.append(("build_native", None))
setup(cmdclass={"build_native": BuildNative}, distclass=NativeDistribution)
