"""What the wire and the broker tell an operator to install names their own extras (#92): one
who installed mq9-broker alone has no langchain-mq9 to add an extra to. The broker's extras are
named on mq9-broker (``./broker[...]`` in a clone), the wire's on mq9-wire (``./wire[...]``),
which every install of the three holds."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mq9_wire import semantic
from mq9_wire.semantic import model_dir, multilingual


@pytest.mark.parametrize(
    ("hint", "extra"),
    [
        (semantic.EXTRA_HINT, "semantic"),
        (semantic.MINILM_HINT, "semantic-minilm"),
        (multilingual.EXTRA_HINT, "semantic"),
        (model_dir.DIR_EXTRA_HINT, "semantic-model-dir"),
    ],
)
def test_the_wires_hints_name_the_wires_extras(hint, extra):
    assert "langchain-mq9" not in hint
    assert f"mq9-wire with [{extra}]" in hint and f"./wire[{extra}]" in hint


@pytest.mark.slow
def test_the_broker_without_nkeys_names_its_own_credentials_extra(tmp_path):
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / "nkeys.py").write_text("raise ImportError('not installed')\n")
    done = subprocess.run(
        [sys.executable, "-m", "mq9_broker", "--port", "0",
         "--credentials", str(tmp_path / "credentials")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "shadow"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("mq9-dev-broker: error: credentials need mq9-broker's 'credentials'")
    assert "./broker[credentials]" in line and "langchain-mq9" not in line
