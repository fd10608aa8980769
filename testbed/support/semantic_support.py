"""What the tests of ``tests/semantic`` share: a Python snippet run in a process of its own
(an extra made unimportable there, or a model chosen, without touching this process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -c script`` in the repository with ``env`` (default: this process's),
    its output as text; the two minutes are a hang guard."""
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env=os.environ.copy() if env is None else env,
    )
