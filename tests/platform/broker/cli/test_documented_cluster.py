"""#61 item 8: docs/deploy.md's first cluster, its configuration and commands as written, read
from the markdown (blocks marked ``<!-- deploy-file: NAME -->``, ``<!-- deploy-commands -->``
and ``<!-- deploy-credentials -->``) and run on loopback with free ports in place of the
documented ones: three nats-servers clustered with JetStream, two brokers (both serving: no
standby since issue #72), state written; then credentials turned on as the doc says (the
setup's config in place of accounts.conf, the servers restarted one at a time, the brokers
started again with --credentials): the state is still there (the mailbox made before
credentials, ownerless, is refused by name rather than unknown), the start logs no refused
login anywhere, and an agent with a credential issued by the documented command is served.

#77 item 2: on both, the storage is the brokers' alone: a client without a login (open) and an
agent with a credential each play the attacker on JetStream's API, the buckets and the state's
subjects (storage_probes.py), refused by nats-server every time, while their mq9 use beside it
works and the stream keeps its config."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mq9_wire import protocol as p
from testbed.ports import unclaimed_port
from testbed.support.credentials_support import ask, ok
from testbed.support.devbroker_helpers import DevBroker, port_open, wait_until, write_mailbox
from testbed.support.jetstream_servers import wait_serving
from tests.platform.broker.cli.storage_probes import (
    hears_no_storage_answers,
    reaches_no_storage,
    still_served,
    stream_unchanged,
)

pytestmark = pytest.mark.slow  # three nats-servers and two brokers, twice
pytest.importorskip("nkeys")

DEPLOY = Path(__file__).resolve().parents[4] / "docs" / "deploy.md"
PORTS = ("4222", "4223", "4224", "6222", "6223", "6224", "8222", "8223", "8224")
BLOCK = re.compile(
    r"<!-- (?P<marker>deploy-[\w-]+)(?:: (?P<name>\S+))? -->\n```\w*\n(?P<body>.*?)^```",
    re.S | re.M,
)


def _documented() -> tuple[dict[str, str], list[str], list[str], str]:
    """The files, the commands, the credentials commands and the line that makes the brokers'
    password, of deploy.md, each documented port replaced by a free one (the same
    everywhere)."""
    text = DEPLOY.read_text()
    free = {port: str(unclaimed_port()) for port in PORTS}
    text = re.sub(r"\b(" + "|".join(PORTS) + r")\b", lambda m: free[m.group(1)], text)
    files, commands, credentials, secret = {}, [], [], ""
    for block in BLOCK.finditer(text):
        marker, body = block.group("marker"), block.group("body")
        if marker == "deploy-file":
            files[block.group("name")] = body
        elif marker == "deploy-commands":
            commands = body.strip().splitlines()
        elif marker == "deploy-credentials":
            credentials = body.strip().splitlines()
        elif marker == "deploy-secret":
            secret = body.strip()
    assert set(files) == {"node1.conf", "node2.conf", "node3.conf", "accounts.conf"}, files
    assert len(commands) == 5 and len(credentials) == 4, (commands, credentials)
    assert secret.startswith("export MQ9_BROKER_PASSWORD="), secret
    return files, commands, credentials, secret


def password_of(secret: str, env: dict[str, str]) -> str:
    """The brokers' password, made by the documented line as written."""
    done = subprocess.run(
        ["bash", "-c", f'{secret}; printf %s "$MQ9_BROKER_PASSWORD"'], env=env,
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert done.stdout.startswith("mq9-") and len(done.stdout) > 20, done
    return done.stdout


def without_login(url: str) -> str:
    """``url`` as a client gives it: no login (the brokers' is theirs)."""
    return re.sub(r"//[^@/]*@", "//", url)


class Deployment:
    """The documented commands run in ``home``, with this venv's executables on PATH."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        self.servers: dict[str, subprocess.Popen[bytes]] = {}
        self.brokers: list[DevBroker] = []

    def start_server(self, line: str) -> None:
        name = shlex.split(line)[-1].removesuffix(".conf")
        with (self.home / f"{name}.log").open("ab") as log:
            self.servers[line] = subprocess.Popen(
                ["bash", "-c", f"exec {line}"], cwd=self.home, env=self.env, stdout=log,
                stderr=log,
            )  # fmt: skip
        port = int(re.search(r"listen: 127\.0\.0\.1:(\d+)", self._config(name)).group(1))
        wait_until(lambda: port_open(port), 30, f"{name} listens on {port}")

    def _config(self, name: str) -> str:
        return (self.home / f"{name}.conf").read_text()

    def restart_server(self, line: str) -> None:
        process = self.servers.pop(line)
        process.terminate()
        process.wait(30)
        self.start_server(line)

    def start_broker(self, line: str) -> DevBroker:
        broker = DevBroker(
            command=["bash", "-c", f"exec {line} --no-search"], cwd=self.home, env=self.env,
            wait=False,
        )  # fmt: skip
        self.brokers.append(broker)
        return broker

    def run(self, line: str) -> str:
        done = subprocess.run(
            ["bash", "-c", line], cwd=self.home, env=self.env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    def server_logs(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.home.glob("node*.log"))

    def close(self) -> None:
        for broker in self.brokers:
            broker.kill()
        for process in self.servers.values():
            process.send_signal(signal.SIGKILL)
            process.wait(10)


def _serving(brokers: list[DevBroker]) -> None:
    """Every broker started serves (each says so as it is ready: there is no standby)."""
    for broker in brokers:
        broker.wait_ready(120)
        wait_serving(broker)
        ready = [x for x in broker.stdout if "ready on" in x]
        assert ready[-1].endswith("(serving)"), broker.output()


def test_the_documented_cluster_runs_as_written_and_keeps_its_state_when_credentials_come(
    tmp_path,
):
    files, commands, credentials, secret = _documented()
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    deployment = Deployment(tmp_path)
    password = password_of(secret, deployment.env)
    deployment.env["MQ9_BROKER_PASSWORD"] = password  # the servers' and the brokers'
    try:
        servers, brokers = commands[:3], commands[3:]
        for line in servers:
            deployment.start_server(line)
        _serving([deployment.start_broker(line) for line in brokers])
        for broker in deployment.brokers:
            assert any(" 3 replicas" in line for line in broker.stdout), broker.output()
        login = shlex.split(brokers[0])[2].split(",")[1]  # the second server: not the first
        login = login.replace("$MQ9_BROKER_PASSWORD", password)
        url = without_login(login)
        asyncio.run(write_mailbox(url, "deploy.box", 3))
        asyncio.run(_anonymous_reaches_no_storage(url, login))
        for broker in deployment.brokers:
            assert broker.stop() == 0, broker.output()
            assert not [x for x in broker.stderr if "default account" in x], broker.output()

        # credentials turned on, as documented
        deployment.run(credentials[0])
        accounts = tmp_path / "accounts.conf"
        assert stat.S_IMODE(accounts.stat().st_mode) == 0o600
        assert "auth_callout" in accounts.read_text()
        for line in servers:  # one at a time
            deployment.restart_server(line)
        assert "Unable to lookup account" not in deployment.server_logs()
        logged_before = len(deployment.server_logs())
        _serving([deployment.start_broker(line) for line in credentials[1:3]])
        new_state = "it starts on a new, empty state"  # said by the first two only
        assert any(new_state in x for b in deployment.brokers[:2] for x in b.stderr)
        assert not any(new_state in x for b in deployment.brokers[2:] for x in b.stderr)
        credential = deployment.run(credentials[3]).splitlines()[0]
        asyncio.run(_agent_served(url, credential))
        for broker in deployment.brokers[2:]:
            assert not [x for x in broker.stderr if "login refused" in x], broker.output()
            assert not [x for x in broker.stderr if " ERROR " in x], broker.output()
        # the brokers' starts tried no login: no server logged a refusal since
        assert "Authorization Violation" not in deployment.server_logs()[logged_before:]
    finally:
        deployment.close()


async def _anonymous_reaches_no_storage(url: str, login: str) -> None:
    await reaches_no_storage(url, "deploy.box")
    await hears_no_storage_answers(url, "deploy.overheard")
    await still_served(url, "deploy.open")
    await stream_unchanged(login)


async def _agent_served(url: str, credential: str) -> None:
    import nats

    name = credential.partition(":")[0]
    agent = await nats.connect(
        url.replace("nats://", f"nats://{credential}@", 1), inbox_prefix=f"_INBOX.{name}".encode()
    )
    try:
        # the state kept before credentials is there: its mailbox is refused as ownerless
        kept = await ask(agent, name, p.MSG_QUERY + "deploy.box", {})
        assert "has no owner" in kept["error"], kept
        await ok(agent, name, p.MAILBOX_CREATE, {"name": "billing.box", "ttl": 0})
        await ok(agent, name, p.send_subject("billing.box"), b"after")
        fetched = await ok(agent, name, p.fetch_subject("billing.box"), {"deliver": "earliest"})
        assert [m["payload"] for m in fetched["messages"]] == ["after"]
    finally:
        await agent.close()
    # the same attacks with the credential: refused; its own use beside them served
    await reaches_no_storage(
        url, "billing.box", user=name, password=credential.partition(":")[2],
        inbox_prefix=f"_INBOX.{name}".encode(),
    )  # fmt: skip
    await still_served(url, "billing.work", credential=credential)
