"""The packages type-check: mypy with the configuration in pyproject.toml (``[tool.mypy]``:
the whole of ``mq9_wire``, ``mq9_broker``, ``langchain_mq9``, ``mq9_mcp`` and ``mq9_cli``,
strict on ``protocol/`` and ``client/``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_finds_nothing():
    # mypy's own cache in the checkout (.mypy_cache, ignored by git), as `.venv/bin/mypy` keeps
    # it: a run after a change checks what changed (seconds), not the whole package (a minute)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(ROOT / ".mypy_cache")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
