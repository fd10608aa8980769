"""What mq9-mcp logs (#37): at info one line per tool call (the tool, the mailbox it is about,
the outcome, the duration), never a payload or a secret; at debug the request id too."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from testbed.support.mcp_support import INITIALIZE, ROOT, server_env

pytestmark = pytest.mark.slow

SECRET = "payload-that-must-stay-out-of-logs"


def calls() -> str:
    lines = [INITIALIZE, {"jsonrpc": "2.0", "method": "notifications/initialized"}]
    for request_id, (tool, arguments) in enumerate(
        [("create_mailbox", {"name": "team.inbox"}),
         ("send_message", {"mail_address": "team.inbox", "payload": SECRET}),
         ("fetch_messages", {"mail_address": "no.such.box"})], start=10
    ):  # fmt: skip
        lines.append({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                      "params": {"name": tool, "arguments": arguments}})  # fmt: skip
    return "".join(json.dumps(line) + "\n" for line in lines)


def run_server(level: str, tmp_path) -> list[str]:
    """The server's log lines about tool calls, for these calls at ``level``: stdin stays open
    until every call is answered (closing it ends the server, calls under way included)."""
    with (tmp_path / "stderr").open("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "mq9_mcp", "--server", "memory://", "--log-level", level],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
            cwd=ROOT, env=server_env(),
        )  # fmt: skip
        try:
            process.stdin.write(calls())
            process.stdin.flush()
            answers = [json.loads(process.stdout.readline()) for _ in range(4)]
        finally:
            process.stdin.close()
            process.wait(timeout=30)
            process.stdout.close()
        stderr.seek(0)
        logged = stderr.read()
    assert sorted(a["id"] for a in answers) == [1, 10, 11, 12]  # every call was answered
    assert SECRET not in logged
    return [line for line in logged.splitlines() if " tool " in line]


@pytest.mark.parametrize("level", ["info", "debug"])
def test_one_line_per_tool_call_with_tool_mailbox_outcome_and_duration(level, tmp_path):
    lines = run_server(level, tmp_path)
    pattern = r"INFO mq9_mcp: tool (\w+) mailbox='([^']*)' outcome=(\w+) \d+ms"
    found = sorted(re.search(pattern, line).groups() for line in lines)
    assert found == sorted(
        [
            ("create_mailbox", "team.inbox", "ok"),
            ("send_message", "team.inbox", "ok"),
            ("fetch_messages", "no.such.box", "error"),
        ]
    )
    ids = [re.search(r"request=(\d+)$", line) for line in lines]
    if level == "debug":
        assert sorted(int(i.group(1)) for i in ids) == [10, 11, 12]
    else:
        assert ids == [None, None, None]
