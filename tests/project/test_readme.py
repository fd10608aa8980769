"""The README's first section: its main command runs exactly as written, and CI runs its test
command (``.ci/run`` reads it from the README)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def command_after(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\n```bash\n(.+)\n```", README)
    assert match, f"README.md has no bash block after <!-- {marker} -->"
    return match.group(1)


def test_ci_runs_the_readme_test_command():
    command = command_after("test-command")
    assert command.endswith("python -m testbed.suite")
    assert "test-command" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
    reason="runs the command in the repository's .venv, which the README's test command creates",
)
def test_the_main_command_runs_as_written():
    command = command_after("main-command")
    done = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "checked on the broker: the task went to agent.summarizer" in done.stdout


@pytest.mark.parametrize("marker", ["main-command", "test-command"])
def test_each_long_step_is_announced_with_about_how_long(marker):
    """Issue #117: the main command spent a minute or more installing, the test command four,
    with nothing printed (pip -q): a newcomer could not tell it from a hang. Each step that
    takes long (the install, what it then runs) follows an ``echo`` saying what runs and about
    how long, and the command stays one line."""
    steps = [step.strip() for step in command_after(marker).split(" && ")]
    for at, step in enumerate(steps):
        if "pip install" in step or step.startswith(".venv/bin/python"):
            said = steps[at - 1]
            assert said.startswith('echo "') and said.endswith('"'), (marker, step)
            assert re.search(r"\b(?:about|seconds?|minutes?|a dot a test)\b", said), said


def test_the_announcements_print_as_written():
    steps = command_after("main-command").split(" && ")
    echoes = " && ".join(step for step in steps if step.startswith("echo "))
    done = subprocess.run(["bash", "-c", echoes], capture_output=True, text=True, timeout=30)
    assert done.stdout.splitlines()[0].startswith("[1/2] installing langchain-mq9")
