"""What ``mq9`` says as it starts (issue #117): a broker that is not there, before it imports
what only a connected command needs (the catalog, its pydantic models and the agent calls were
imported first, 1.4-2.2 s more than ``mq9 --help`` before the refusal); what a watch waits for
(it said nothing until a message came)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mq9_cli.app import cli
from testbed.ports import silent_port

# What the refusal must not wait on (the client's own imports, the groups' dead letters among
# them, it needs): the catalog and pydantic under it, the agent calls, wake's reads, the CLI's
# reads, LangChain, and aiohttp (nats-py's for ws:// servers only)
NOT_YET = ("pydantic", "mq9_platform.operations", "mq9_platform.a2a", "mq9_platform.wake",
           "mq9_cli.overview", "langchain_core", "aiohttp")  # fmt: skip

# Runs ``mq9 ARGS`` in this interpreter, noting the modules imported when the first dial starts
SPY = """
import json, sys
from mq9_platform.client.transport import NatsTransport

dialed = []
real = NatsTransport.connect

async def connect(self):
    dialed.append(sorted(sys.modules)) if not dialed else None
    return await real(self)

NatsTransport.connect = connect
from mq9_cli import main

code = main(sys.argv[1:])
print(json.dumps({"code": code, "dialed": dialed[0] if dialed else None,
                  "refused": sorted(sys.modules)}))
"""


@pytest.mark.slow  # a fresh interpreter per command: what it imports is the point
@pytest.mark.parametrize(
    "command",
    [["agents"], ["fetch", "team.inbox"], ["watch", "team.inbox", "--for", "1"]],
)  # fmt: skip
def test_an_unreachable_broker_is_dialed_before_the_commands_imports(command):
    server = f"nats://127.0.0.1:{silent_port()}"
    ran = subprocess.run([sys.executable, "-c", SPY, "--server", server, *command],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    said = json.loads(ran.stdout.splitlines()[-1])
    assert said["code"] == 4, ran.stderr  # unreachable
    assert said["dialed"], "it never dialed"
    for moment in ("dialed", "refused"):
        early = [m for m in said[moment] if m.startswith(NOT_YET)]
        assert not early, f"imported before it {moment}: {early[:12]}"
    assert ran.stderr.startswith("mq9: cannot connect to the mq9 broker at"), ran.stderr


def mq9(*args: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(cli, ["--server", "memory://watch-says", *args], prog_name="mq9")
    return done.exit_code, done.stdout, done.stderr


def test_a_watch_says_what_it_waits_for_on_standard_error():
    assert mq9("create", "team.said")[0] == 0
    code, out, err = mq9("watch", "team.said", "--for", "0.2", "--json")
    assert (code, out) == (0, "")  # standard output stays the messages' alone
    said = "watching team.said for new messages (it holds none now): for 0.2 s at most"
    assert err == f"mq9: {said}, Ctrl-C stops\n"
    assert mq9("send", "team.said", "one")[0] == 0
    code, out, err = mq9("watch", "team.said", "--count", "3", "--for", "0.2")
    assert err.startswith("mq9: watching team.said for messages after msg_id 0, the newest now: ")
    assert "until 3 have come, for 0.2 s at most, Ctrl-C stops" in err and out == ""
    code, out, err = mq9("watch", "team.said", "--from-id", "0", "--count", "1")
    assert err == "mq9: watching team.said from msg_id 0: until 1 have come, Ctrl-C stops\n"
    assert "one" in out
