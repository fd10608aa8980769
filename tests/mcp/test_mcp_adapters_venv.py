"""The toolkit installs beside langchain-mcp-adapters (issue #54), for projects still on it: it
is discontinued (0.3.2 its last release; its README points to ``langchain.mcp``, the client the
docs lead with: test_mcp_langchain.py). Every adapters release the index serves pins mcp<2,
and mq9-mcp runs on mcp>=2.3: so the MCP SDK is mq9-mcp's (mcp_server, #108), the toolkit's
install has none, and mq9-mcp runs from a virtualenv of its own.

A fresh virtualenv gets the toolkit's four wheels (the wire, the broker, the platform, the top):
no MCP SDK and no mq9-mcp there. Then langchain-mcp-adapters joins it (mcp 1.x with it), and in
the same script the toolkit's tools and ``MultiServerMCPClient`` work side by side on one dev
broker, the MCP tools served by the mq9-mcp of this test run's virtualenv. Skipped, saying why,
when the package registry cannot be reached."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from testbed.support.devbroker_helpers import DevBroker

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = ("Failed to establish", "No matching distribution", "ConnectionError",
               "Temporary failure", "Network is unreachable")  # fmt: skip
# Where the MCP server runs: this test run's virtualenv, which has the mcp extra
SERVER_MQ9_MCP = Path(sys.executable).with_name("mq9-mcp")

TOOLKIT_ALONE = """
import importlib.util
from langchain_mq9 import Mq9InboxMiddleware, Mq9Toolkit
toolkit = Mq9Toolkit(server="memory://")
Mq9InboxMiddleware(toolkit)
print(len(toolkit.get_tools()), importlib.util.find_spec("mcp") is None)
"""

SIDE_BY_SIDE = """
import asyncio, json, sys
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mq9 import Mq9Toolkit

async def main(url, mq9_mcp):
    toolkit = {t.name: t for t in Mq9Toolkit(server=url).get_tools()}
    created = json.loads(await toolkit["create_mailbox"].ainvoke({"name": "beside.adapters"}))
    await toolkit["send_message"].ainvoke(
        {"mail_address": created["mail_address"], "payload": "from the toolkit"})
    client = MultiServerMCPClient({"mq9": {
        "command": mq9_mcp, "args": ["--server", url], "transport": "stdio"}})
    tools = {t.name: t for t in await client.get_tools()}
    answer = await tools["fetch_messages"].ainvoke(
        {"mail_address": created["mail_address"]})
    print(json.dumps({"mcp_tools": sorted(tools), "fetched": str(answer)}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def run(*command: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=timeout
    )


def pip_install(python: Path, *requirements: str | Path) -> None:
    done = run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               *requirements)  # fmt: skip
    if done.returncode != 0:
        if any(words in done.stderr for words in UNREACHABLE):
            pytest.skip(f"the package registry is unreachable: {done.stderr.strip()[-300:]}")
        pytest.fail(f"pip install {requirements} failed:\n{done.stderr[-3000:]}")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> list[Path]:
    """The toolkit's four distributions' wheels (wire/, broker/, platform/, the top), as the
    README builds them: langchain-mq9 pins the other three, which no package registry serves."""
    out = tmp_path_factory.mktemp("wheel")
    done = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-w", out, ROOT / "wire", ROOT / "broker",
               ROOT / "platform", ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = sorted(out.glob("*.whl"))
    names = sorted(path.name.split("-")[0] for path in found)
    assert names == ["langchain_mq9", "mq9_broker", "mq9_platform", "mq9_wire"], found
    return found


def test_the_toolkit_and_multiserver_mcp_client_share_a_virtualenv(tmp_path, wheels):
    venv.create(tmp_path / "env", with_pip=True)
    python, mq9_mcp = tmp_path / "env/bin/python", tmp_path / "env/bin/mq9-mcp"

    pip_install(python, *wheels)  # the toolkit: no MCP SDK, and it works without one
    toolkit = run(python, "-c", TOOLKIT_ALONE, timeout=120)
    assert toolkit.returncode == 0 and toolkit.stdout.split() == ["8", "True"], toolkit
    assert not mq9_mcp.exists()  # mq9-mcp is a face of its own: not in the toolkit's install

    pip_install(python, "langchain-mcp-adapters")
    sdk = run(python, "-c", "from importlib.metadata import version; print(version('mcp'))")
    assert sdk.stdout.startswith("1."), sdk  # what the adapters pin; mq9-mcp needs 2.3

    with DevBroker("--port", "0") as broker:
        done = run(python, "-c", SIDE_BY_SIDE, broker.url, SERVER_MQ9_MCP, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert {"create_mailbox", "send_message", "fetch_messages"} <= set(result["mcp_tools"])
        assert "from the toolkit" in result["fetched"], result
