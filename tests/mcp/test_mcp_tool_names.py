"""mq9-mcp's tool names beside RobustMQ's own MCP server (#65): RobustMQ's admin-server serves 9
tools named ``mq9_*`` at ``/mcp``. mq9-mcp's default names (no prefix) and the documented
prefix ``mq9mcp_`` never match them, whatever tools are on; ``--tool-prefix mq9_`` would, and
the server says so when it starts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mq9_mcp.cli import ROBUSTMQ_TOOLS, robustmq_clashes
from mq9_platform.operations.policy import ToolPolicy
from testbed.support.mcp_support import ROOT, server_env

ROBUSTMQ_REPO = Path("/work/.mirror/robustmq+robustmq/repo")
SETTINGS = [{}, {"calls": True}, {"read_only": True}, {"calls": True, "tool_prefix": "mq9mcp_"}]


@pytest.mark.parametrize("settings", SETTINGS)
def test_the_default_and_the_documented_prefix_never_name_a_robustmq_tool(settings):
    assert robustmq_clashes(ToolPolicy(**settings)) == []


def test_the_prefix_mq9_would_and_is_named():
    clashes = robustmq_clashes(ToolPolicy(calls=True, tool_prefix="mq9_"))
    assert clashes == ["mq9_create_mailbox", "mq9_delete_message", "mq9_fetch_messages",
                       "mq9_send_message"]  # fmt: skip


@pytest.mark.slow  # runs a process
def test_the_robustmq_tool_names_are_robustmqs():
    """Against RobustMQ's source where a checkout of it is at hand."""
    if not ROBUSTMQ_REPO.exists():
        pytest.skip("no RobustMQ checkout here to read its MCP server's tool names from")
    source = subprocess.run(
        ["git", "--git-dir", str(ROBUSTMQ_REPO), "show",
         "HEAD:src/admin-server/src/mcp/mq9/mod.rs"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert set(re.findall(r'name: "(mq9_\w+)"\.to_string\(\)', source)) == ROBUSTMQ_TOOLS


@pytest.mark.slow
def test_mq9_mcp_warns_of_a_prefix_that_names_robustmqs_tools():
    started = subprocess.run(
        [sys.executable, "-m", "mq9_mcp", "--server", "memory://", "--tool-prefix", "mq9_"],
        cwd=ROOT, env=server_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    [line] = [line for line in started.stderr.splitlines() if "RobustMQ" in line]
    assert "mq9_send_message" in line and "mq9mcp_" in line
