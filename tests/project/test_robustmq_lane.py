"""The real-broker lane as CI runs it (#111): `.ci/run` runs `testbed/robustmq.sh lane` once the
README's test command passed, and the lane, where there is no prebuilt RobustMQ beside the
checkout, says so in one line naming the build recipe and does not fail (a clone elsewhere)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # (it runs the lane's script)


def test_the_lane_says_in_one_line_that_there_is_no_prebuilt_robustmq(tmp_path):
    env = os.environ | {"MQ9_ROBUSTMQ_PREBUILT": str(tmp_path / "nowhere")}
    done = subprocess.run(
        ["bash", str(ROOT / "testbed" / "robustmq.sh"), "lane"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert "not run" in line and "testbed/robustmq.sh build SRC vector-search" in line


def test_ci_runs_the_lane_after_the_readme_command_with_the_sdks_snapshot():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.index('bash -c "$command"') < ci.index("testbed/robustmq.sh lane")
    assert "export MQ9_SDK_REPO=$shared_robustmq/mq9-sdk" in ci
