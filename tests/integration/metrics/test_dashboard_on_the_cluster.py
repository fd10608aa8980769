"""The shipped dashboard has data on the JetStream store (#78 items 1 and 3): docs/deploy.md's
cluster as written (its server files and commands, read from the markdown, with free ports in
place of the documented ones), two brokers on ``--store jetstream``, a waker, an A2A gateway,
``mq9-mcp`` over HTTP and the console, each with ``--metrics`` on the port deploy.md gives it
(put to a free one), scraped by a real Prometheus with the shipped
packaging/prometheus/prometheus.yml (its jobs for the waker, the gateway, mq9-mcp and the second
broker added as its comments say, its ports put the same way) and its alerting rules loaded.
After some traffic, every expression of docs/grafana-dashboard.json returns data, what the
cluster holds is the same on both brokers and not zero, and every server is ready."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shlex
import sys
import urllib.request
from pathlib import Path

import pytest
from test_every_server_scraped import DASHBOARD, _get_status, _post, _wait_status

from mq9_broker.storage.jetstream import Layout
from mq9_platform import Mq9Client
from mq9_platform.groups.dead_letters import dead_letter_address
from mq9_platform.wake.book import RuleBook
from mq9_platform.wake.rules import WakeRule
from mq9_wire.protocol.errors import MailboxNotFound
from testbed.ports import unclaimed_port
from testbed.support.devbroker_helpers import DevBroker, port_open, wait_until
from testbed.support.jetstream_servers import FORMING, wait_serving
from testbed.support.waiting import until_sync
from tests.platform.metrics.operator_support import (
    DEADLINE,
    NO_PROMETHEUS,
    PROMETHEUS,
    WAKE,
    Prometheus,
    Server,
    every_server,
)

pytestmark = pytest.mark.slow  # three nats-servers, two brokers, four servers, prometheus

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "docs" / "deploy.md"
SHIPPED = ROOT / "packaging" / "prometheus"
NATS_PORTS = ("4222", "4223", "4224", "6222", "6223", "6224", "8222", "8223", "8224")
METRICS_PORTS = ("9464", "9465", "9466", "9467", "9468", "9469")
BLOCK = re.compile(
    r"<!-- (?P<marker>deploy-[\w-]+)(?:: (?P<name>\S+))? -->\n```\w*\n(?P<body>.*?)^```",
    re.S | re.M,
)
TRUE = "/bin/true"
# what the cluster holds, after the traffic below: each above 0 on both brokers
HELD = (
    "mq9_broker_mailboxes", "mq9_broker_messages", "mq9_broker_message_bytes",
    "mq9_broker_dead_letters", "mq9_broker_agents", "mq9_broker_groups",
    "mq9_broker_group_pending_messages", "mq9_broker_group_pending_max",
)  # fmt: skip


def _free(text: str, free: dict[str, str]) -> str:
    ports = "|".join(free)
    return re.sub(rf"\b({ports})\b", lambda m: free[m.group(1)], text)


def _documented(home: Path, free: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """deploy.md's server files written into ``home``, its commands (ports made free), and
    the environment they run in (this venv first on PATH, the brokers' password made by the
    documented line)."""
    import subprocess

    text = _free(DEPLOY.read_text(), free)
    commands, secret = [], ""
    for block in BLOCK.finditer(text):
        marker, body = block.group("marker"), block.group("body")
        if marker == "deploy-file":
            (home / block.group("name")).write_text(body)
        elif marker == "deploy-commands":
            commands = body.strip().splitlines()
        elif marker == "deploy-secret":
            secret = body.strip()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    made = subprocess.run(
        ["bash", "-c", f'{secret}; printf %s "$MQ9_BROKER_PASSWORD"'], env=env,
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    env["MQ9_BROKER_PASSWORD"] = made.stdout
    return commands, env


def _start_servers(lines: list[str], home: Path, env: dict[str, str]) -> list[Server]:
    """The documented nats-servers, each listening; on a failure, those started stopped and
    the output of the one that exited."""
    started: list[Server] = []
    try:
        for line in lines:
            server = Server(["bash", "-c", f"cd {shlex.quote(str(home))} && exec {line}"], env)
            started.append(server)
            name = shlex.split(line)[-1].removesuffix(".conf")
            conf = (home / f"{name}.conf").read_text()
            port = int(re.search(r"listen: 127\.0\.0\.1:(\d+)", conf).group(1))

            def up(port: int = port, server: Server = server) -> bool:
                return port_open(port) or server.process.poll() is not None

            wait_until(up, DEADLINE, f"{name} listens on {port}")
            assert server.process.poll() is None, f"{name} exited: {server.output()}"
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    return started


async def _traffic(url: str, credential: str | None = None, watched: str | None = None) -> None:
    """What gives every broker panel data: mailboxes, messages, a dead letter, a refusal, a
    group part read, an agent, and a mail to a mailbox the waker watches (``watched``, made
    with its rule by its owner; else made here). ``credential``: the agent's login."""
    options = {"credential": credential} if credential else {}
    async with Mq9Client(url, **options) as client:
        await client.mailbox_create(name="agent.busy")
        await client.mailbox_create(name=dead_letter_address("agent.busy"))
        if watched is None:
            watched = "agent.watched"
            await client.mailbox_create(name=watched)
            await RuleBook(client).add(
                WakeRule(mailbox=watched, target="command", argv=(TRUE,), min_interval=0)
            )
        for i in range(20):
            await client.send("agent.busy", f"job {i}")
        await client.send(dead_letter_address("agent.busy"), "dead")
        with pytest.raises(MailboxNotFound):
            await client.send("agent.nobody", "lost")
        taken = await client.fetch(
            "agent.busy", group_name="workers", deliver="earliest", num_msgs=5, max_wait_ms=0
        )
        await client.ack("agent.busy", "workers", taken[-1].msg_id)
        await client.agent_register(
            {"name": "agent.busy", "description": "busy", "mailbox": "agent.busy"}
        )
        await client.send(watched, "wake up")


def _http_traffic(gateway: str, token: str, mcp: str, console: str) -> None:
    """An A2A call, an MCP session and a tool call, a console page."""
    auth = {"Authorization": f"Bearer {token}", "A2A-Version": "1.0"}
    _wait_status(gateway + "/.well-known/agent-card.json", 200, auth)
    status, answer = _post(gateway, {
        "jsonrpc": "2.0", "id": 1, "method": "SendMessage",
        "params": {"message": {"messageId": "m1", "role": "ROLE_USER",
                               "parts": [{"text": "hi"}]}},
    }, auth)  # fmt: skip
    assert status == 200 and b"TASK_STATE_SUBMITTED" in answer, answer
    accept = {"Accept": "application/json, text/event-stream"}
    status, _ = _post(mcp, {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "1"}},
    }, accept)  # fmt: skip
    assert status == 200
    # counted by method and tool as it arrives, whatever the answer (no session given here)
    _post(mcp, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "create_mailbox", "arguments": {}}}, accept)  # fmt: skip
    assert _get_status(console + "/login") == 200


def _expressions() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "1m"))
        for panel in board["panels"]
        for target in panel["targets"]
    ]


def _every_expression_has_data(prometheus: Prometheus) -> None:
    waiting = dict.fromkeys(_expressions())

    def all_have_data() -> bool:
        for title, expr in list(waiting):
            if prometheus.query(expr):
                del waiting[(title, expr)]
        return not waiting

    what = "data for every panel's expression"
    until_sync(all_have_data, timeout=DEADLINE, what=what, every=1, show=lambda: sorted(waiting))


def _start_the_others(url: str, metrics: dict[str, str], tmp: Path, into: list[Server]) -> None:
    """The waker, the gateway, mq9-mcp and the console on ``url`` (added to ``into``, which
    the caller stops), each with ``--metrics`` on its documented port's stand-in, ready; then
    the traffic through the HTTP ones."""
    token = secrets.token_hex(16)
    (tmp / "tokens.json").write_text(json.dumps({"app": token}))
    gateway, mcp, console = unclaimed_port(), unclaimed_port(), unclaimed_port()
    into += [
        Server([*WAKE, "--server", url, "--poll", "0.1", "--allow-command", TRUE,
                "--metrics", metrics["9465"]]),
        Server([sys.executable, "-m", "mq9_platform.a2a.gateway.cli", "--server", url,
                "--agent", "agent.echo", "--listen", f"127.0.0.1:{gateway}", "--tokens-file",
                str(tmp / "tokens.json"), "--send-wait", "0.5", "--metrics", metrics["9466"]]),
        Server([sys.executable, "-m", "mq9_mcp", "--server", url, "--transport", "http",
                "--port", str(mcp), "--metrics", metrics["9467"]]),
        Server([sys.executable, "-m", "mq9_cli", "--server", url, "console", "--port",
                str(console), "--metrics", metrics["9468"]]),
    ]  # fmt: skip
    for server in into[-4:]:
        _wait_status(server.metrics_url().replace("/metrics", "/readyz"), 200)
    _http_traffic(
        f"http://127.0.0.1:{gateway}/a2a/agent.echo", token, f"http://127.0.0.1:{mcp}/mcp",
        f"http://127.0.0.1:{console}",
    )  # fmt: skip


def start_brokers(
    lines: list[str], free: dict[str, str], home: Path, env: dict[str, str], into: list
) -> None:
    """deploy.md's broker lines, each with ``--metrics`` on its documented port's stand-in
    (9464, 9469), added to ``into`` as started (the caller kills them, also when this
    fails), then serving."""
    # (#91) the servers' monitoring endpoints, as docs/broker-watching.md#watching-the-nats-servers
    monitors = ",".join(f"http://127.0.0.1:{free[port]}" for port in ("8222", "8223", "8224"))
    for line, port in zip(lines, ("9464", "9469"), strict=True):
        argv = f"exec {line} --no-search --metrics 127.0.0.1:{free[port]} --nats-monitor {monitors}"
        into.append(DevBroker(command=["bash", "-c", argv], cwd=home, env=env, wait=False))
    brokers_serving(into)


def brokers_serving(brokers: list[DevBroker]) -> None:
    """Each serving, its start-up line naming the real stream and buckets (#78 item 4)."""
    layout = Layout()
    said = f"stream {layout.messages} and key-value buckets {', '.join(layout.buckets)}"
    for broker in brokers:
        wait_serving(broker, FORMING)
        assert any(said in line for line in broker.stdout), broker.output()


def scrape_and_check(home: Path, free: dict[str, str]) -> Prometheus:
    """A real Prometheus with the shipped config (ports made free, a 2 s interval) and rules,
    scraping every server: all up and ready, what the cluster holds the same on both brokers
    and not zero, every dashboard expression with data, the 13 alerts loaded. The caller stops
    the Prometheus returned (kept in ``home``'s run)."""
    shipped = _free(every_server((SHIPPED / "prometheus.yml").read_text()), free)
    shipped = shipped.replace("scrape_interval: 15s", "scrape_interval: 2s")
    shipped = shipped.replace("scrape_timeout: 10s", "scrape_timeout: 2s")
    (home / "mq9-alerts.yml").write_text((SHIPPED / "mq9-alerts.yml").read_text())
    prometheus = Prometheus(home, {}, config_text=shipped)
    try:
        for job in ("mq9-broker", "mq9-wake", "mq9-gateway", "mq9-mcp", "mq9-console"):
            assert prometheus.wait_for(f'min(up{{job="{job}"}})', 1) == 1, job
        assert prometheus.wait_for('count(up{job="mq9-broker"})', 2) == 2
        for server in ("broker", "wake", "gateway", "mcp", "console"):
            assert prometheus.wait_for(f"min(mq9_{server}_ready)", 1) == 1, server
        for name in HELD:  # the cluster's figures: on both brokers, the same, not zero
            prometheus.wait_for(f"min({name})", 1)
            assert prometheus.value(f"max({name}) - min({name})") == 0, name
        _every_expression_has_data(prometheus)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{prometheus.port}/api/v1/rules", timeout=30
        ) as answer:
            groups = json.loads(answer.read())["data"]["groups"]
        assert sum(len(group["rules"]) for group in groups) == 13  # the shipped alerts, loaded
    except BaseException:
        prometheus.stop()
        raise
    return prometheus


@pytest.mark.skipif(PROMETHEUS is None, reason=NO_PROMETHEUS)
def test_every_dashboard_expression_has_data_on_the_documented_cluster(tmp_path):
    free = {port: str(unclaimed_port()) for port in (*NATS_PORTS, *METRICS_PORTS)}
    commands, env = _documented(tmp_path, free)
    servers: list[Server] = []
    brokers: list[DevBroker] = []
    prometheus = None
    try:
        servers += _start_servers(commands[:3], tmp_path, env)
        start_brokers(commands[3:], free, tmp_path, env, brokers)
        urls = shlex.split(commands[3])[2].split(",")
        url = ",".join(re.sub(r"//[^@/]*@", "//", one) for one in urls)  # a client's: no login
        asyncio.run(_traffic(url))

        metrics = {port: f"127.0.0.1:{free[port]}" for port in METRICS_PORTS}
        _start_the_others(url, metrics, tmp_path, servers)
        prometheus = scrape_and_check(tmp_path, free)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for broker in brokers:
            broker.kill()
        for server in reversed(servers):
            server.stop()
