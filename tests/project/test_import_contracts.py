"""The import plan holds, for the product and for the tests, as pyproject.toml's
``[tool.importlinter]`` contracts say: the distributions import one way (a face, the platform,
the broker, the wire), nothing below the LangChain face imports LangChain, and each tests folder
imports only its distribution and those below it, directly or through a helper (testbed/ and
the other folders included), so each runs in an environment holding only those."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    command = [str(lint)] if lint.exists() else [shutil.which("lint-imports") or "lint-imports"]
    done = subprocess.run(
        [*command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " 0 broken" in done.stdout, done.stdout[-2000:]
