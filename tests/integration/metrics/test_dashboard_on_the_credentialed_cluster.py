"""The shipped dashboard and alerts on docs/deploy.md's cluster WITH credentials (#78's "Done
when"): its server files, ``credentials setup`` (the accounts config it prints, taken by the
servers), the brokers' ``--credentials`` lines (two, ``--metrics`` added), the documented
``credentials issue`` lines, and the waker, the A2A gateway, ``mq9-mcp`` and the console as the
section starts them, each logged in with its credential file and ``--metrics`` on its port
(every documented port put to a free one). Agents log in with the credentials issued. A real
Prometheus with the shipped config scrapes them all: every server up and ready, every dashboard
expression with data, the alert rules loaded (test_dashboard_on_the_cluster.scrape_and_check).

The cluster starts on the credentialed config at once: the rolling restart from the open one is
test_documented_cluster.py's."""

from __future__ import annotations

import asyncio
import json
import secrets
import shlex
import subprocess
from pathlib import Path

import pytest

from mq9_platform import Mq9Client
from mq9_platform.wake.book import RuleBook
from mq9_platform.wake.rules import WakeRule
from testbed.ports import unclaimed_port
from testbed.support.devbroker_helpers import DevBroker
from tests.integration.metrics.test_dashboard_on_the_cluster import (
    BLOCK,
    DEPLOY,
    METRICS_PORTS,
    NATS_PORTS,
    TRUE,
    _documented,
    _free,
    _http_traffic,
    _start_servers,
    _traffic,
    scrape_and_check,
    start_brokers,
)  # fmt: skip
from tests.integration.metrics.test_every_server_scraped import _wait_status
from tests.platform.metrics.operator_support import NO_PROMETHEUS, PROMETHEUS, Server

pytestmark = pytest.mark.slow  # three nats-servers, two brokers, four servers, prometheus

HTTP_PORTS = ("8300", "8000", "8080")  # the gateway's, mq9-mcp's and the console's
# what the test adds to a documented server line: a fast poll and the wake's command allowed,
# a short blocking send (the test's call needs no answer)
EXTRA = {"mq9-wake": f" --poll 0.1 --allow-command {TRUE}", "mq9-a2a-gateway": " --send-wait 0.5"}


def _blocks(free: dict[str, str]) -> dict[str, list[str]]:
    text = _free(DEPLOY.read_text(), free)
    return {
        b.group("marker"): b.group("body").strip().splitlines()
        for b in BLOCK.finditer(text)
        if b.group("marker").startswith("deploy-credentials")
    }


def _option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def _run(line: str, home: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", "-c", f"cd {shlex.quote(str(home))} && {line}"], env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, (line, done.stdout, done.stderr)
    return done.stdout


async def _watched(url: str, credential: str, mailbox: str) -> None:
    """The waker's tenant makes the mailbox it watches and its rule (only its owner may)."""
    async with Mq9Client(url, credential=credential) as client:
        await client.mailbox_create(name=mailbox)
        await RuleBook(client).add(
            WakeRule(mailbox=mailbox, target="command", argv=(TRUE,), min_interval=0)
        )


async def _billing(url: str, credential: str, served: str) -> None:
    async with Mq9Client(url, credential=credential) as client:
        await client.mailbox_create(name=served)  # the gateway's agent: its owner makes it


def _start_clients(lines: list[str], home: Path, env: dict, into: list[Server]) -> None:
    for line in lines:
        words = line.split(" ")
        given = words[:1] if "=" in words[0] else []  # the line's environment (bash's VAR=x)
        rest = " ".join(words[len(given) :])
        program = rest.split(" ")[0]
        argv = f"cd {shlex.quote(str(home))} && {' '.join(given)} exec {rest}"
        argv += EXTRA.get(program, "")
        into.append(Server(["bash", "-c", argv], env))
    for server in into[-4:]:
        _wait_status(server.metrics_url().replace("/metrics", "/readyz"), 200)


@pytest.mark.skipif(PROMETHEUS is None, reason=NO_PROMETHEUS)
def test_every_dashboard_expression_has_data_on_the_credentialed_cluster(tmp_path):
    ports = (*NATS_PORTS, *METRICS_PORTS, *HTTP_PORTS)
    # written into the servers' files before they start: below the ephemeral range, where no
    # other process's connection takes one meanwhile (CI met node3's taken, 30 s of silence)
    free = {port: str(unclaimed_port()) for port in ports}
    commands, env = _documented(tmp_path, free)  # the files written, the open commands
    blocks = _blocks(free)
    setup, brokers_lines, issue = (
        blocks["deploy-credentials"][0], blocks["deploy-credentials"][1:3],
        blocks["deploy-credentials"][3],
    )  # fmt: skip
    servers_block = blocks["deploy-credentials-servers"]
    servers: list[Server] = []
    brokers: list[DevBroker] = []
    prometheus = None
    try:
        _run(setup, tmp_path, env)  # accounts.conf replaced by the credentialed one
        assert "auth_callout" in (tmp_path / "accounts.conf").read_text()
        servers += _start_servers(commands[:3], tmp_path, env)
        start_brokers(brokers_lines, free, tmp_path, env, brokers)
        billing = _run(issue, tmp_path, env).splitlines()[0]
        for line in servers_block[:4]:
            _run(line, tmp_path, env)
        wake = shlex.split(servers_block[4])
        url = _option(wake, "--server")  # the plain URLs the documented clients use
        support = (tmp_path / wake[0].partition("=")[2]).read_text().strip()
        watched = _option(wake, "--mailbox")
        asyncio.run(_watched(url, support, watched))
        gateway = shlex.split(servers_block[5])
        served = _option(gateway, "--agent")
        asyncio.run(_billing(url, billing, served))
        token = secrets.token_hex(16)
        (tmp_path / "tokens.json").write_text(json.dumps({"app": token}))
        _start_clients(servers_block[4:], tmp_path, env, servers)

        asyncio.run(_traffic(url, credential=billing, watched=watched))
        listen = _option(gateway, "--listen")
        mcp = _option(shlex.split(servers_block[6]), "--port")
        console = _option(shlex.split(servers_block[7]), "--port")
        _http_traffic(
            f"http://{listen}/a2a/{served}", token, f"http://127.0.0.1:{mcp}/mcp",
            f"http://127.0.0.1:{console}",
        )  # fmt: skip
        prometheus = scrape_and_check(tmp_path, free)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for broker in brokers:
            broker.kill()
        for server in reversed(servers):
            server.stop()
