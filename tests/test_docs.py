"""The README's commands are the Makefile's, and no project file refers to tracker issues by number."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_run(*args: str) -> str:
    """What ``make -n ARGS`` would run, from the repository root.

    Under ``make test`` this runs as a sub-make: without the parent's variables removed it would print
    "Entering/Leaving directory" lines and inherit the parent's flags.
    """
    env = {k: v for k, v in os.environ.items() if k not in {"MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"}}
    out = subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def quick_start() -> list[str]:
    block = re.search(r"## Quick start\n+```bash\n(.*?)```", README, re.S)
    assert block, "README has no bash block under '## Quick start'"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


@needs_make
def test_the_quick_start_is_two_make_commands_that_the_makefile_defines() -> None:
    commands = quick_start()
    assert commands == ["make test", "make run METHOD=pabee TASK=mrpc"]
    assert dry_run("test").strip().splitlines()[-1].endswith('-m pytest -m "not slow"')
    assert dry_run("run", "METHOD=pabee", "TASK=mrpc").strip().splitlines()[-1].endswith(
        "python -m dynbench method=pabee task=mrpc")


@needs_make
def test_every_make_target_the_readme_names_exists() -> None:
    named = set(re.findall(r"(?:^|`)make ([a-z][a-z-]*)", README, re.M))
    assert {"test", "run", "report", "recipe", "baselines"} <= named
    for target in sorted(named):
        dry_run(target, "PY=python")


def test_no_project_file_mentions_an_issue_number() -> None:
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    pattern = re.compile(rb"\bissues?[\s_-]*#?\d", re.I)
    # report pages and plots are base64 and binary: a chance match there would say nothing
    files = [ROOT / name for name in listed if not name.endswith((".png", ".html")) and (ROOT / name).is_file()]
    assert [str(p.relative_to(ROOT)) for p in files if pattern.search(p.read_bytes())] == []
