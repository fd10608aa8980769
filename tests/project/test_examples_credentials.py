"""Every example that takes ``--credential-file`` runs on a broker that enforces per-agent
credentials (``mq9-dev-broker --credentials``, issue #53), its agents logging in with the one
credential given: a broker of its own per example (those discovering by capability would
otherwise pick each other's agents), as ``python examples/<name>.py`` runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.support.credentials_support import EnforcingBroker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(
    path.name
    for path in (ROOT / "examples").glob("*.py")
    if "parser(__doc__)" in path.read_text(encoding="utf-8")
)

pytestmark = pytest.mark.slow  # a dev broker and an example process per test


def test_the_examples_taking_a_credential_are_found():
    assert len(EXAMPLES) >= 10 and "agent_calls.py" in EXAMPLES


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_with_a_credential_file(name, tmp_path):
    broker = EnforcingBroker(tmp_path / "data", "demo")
    try:
        credential = tmp_path / "demo.cred"
        credential.write_text(broker.credentials["demo"] + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MQ9_", "NATS_"))}
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples" / name), "--server", broker.url,
             "--credential-file", str(credential)],
            cwd=ROOT, env=env, capture_output=True, text=True, encoding="utf-8", timeout=180,
        )  # fmt: skip
    finally:
        broker.stop()
    # the broker refuses a login without a credential: the flag alone gave every client one
    assert done.returncode == 0, done.stderr[-3000:]
    secret = broker.credentials["demo"].partition(":")[2]
    assert secret not in done.stdout + done.stderr
