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
    assert command.endswith("python -m pytest -q")
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
