"""The console on each deployment docs/deploy.md describes, started as an operator starts it:
``mq9-dev-broker --console`` on the memory, SQLite and JetStream stores, and on a
``--credentials`` broker with two tenants, where it sees what its credential may see and lists
the rest as not its own (never a failed page). Each refusal is one line; nothing outlives the
broker."""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid
from pathlib import Path

import httpx
import pytest
from console_world import TOKEN

from mq9_platform import Mq9Client
from mq9_platform.groups.dead_letters import dead_letter_address
from mq9_platform.groups.dead_letters import store as store_dead_letter
from testbed.support.credentials_support import issue
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.jetstream_servers import JetStreamCluster, wait_serving
from testbed.support.waiting import until_sync

pytestmark = pytest.mark.slow
WAIT = 120.0  # seconds: a hang guard on a busy machine, never a timing assertion
BEARER = {"authorization": f"Bearer {TOKEN}"}
CONSOLE_LINE = re.compile(r"mq9 console on (http://\S+)/login")


def console_url(broker: DevBroker) -> str:
    """Where the broker's console serves, as it printed (it picked a free port)."""

    def printed() -> str | None:
        for line in broker.stderr:
            if found := CONSOLE_LINE.search(line):
                return found[1]
        assert broker.process.poll() is None, broker.output()
        return None

    what = "the console's URL printed"
    return until_sync(printed, timeout=WAIT, what=what, every=0.1, show=broker.output)


def listening(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def stopped_with_its_console(broker: DevBroker, url: str) -> None:
    assert broker.stop() == 0, broker.output()
    # the console ends with the broker, reaped
    until_sync(lambda: not listening(url), timeout=60, what="the console gone", every=0.2)


async def register(url: str, name: str) -> None:
    async with Mq9Client(url, request_timeout=60) as client:
        await client.mailbox_create(name=name)
        await client.agent_register({"name": name, "capabilities": "does things", "mailbox": name})
        await client.send(name, "hello \u202eexe.txt")


async def set_aside(url: str, name: str) -> None:
    """``name``'s first message set aside as a group sets a poison message aside: its owner's
    ``<name>.dlq`` made, holding one dead letter."""
    async with Mq9Client(url, request_timeout=60) as client:
        [first] = await client.query(name, limit=1)
        dlq = dead_letter_address(name)
        await store_dead_letter(client, dlq, first, mailbox=name, group="g", attempts=3, reason="x")


def env_with(**extra: str) -> dict[str, str]:
    import os

    return {**os.environ, "MQ9_CONSOLE_TOKEN": TOKEN, **extra}


@pytest.mark.parametrize("store", ["memory", "sqlite", "jetstream"])
def test_the_dev_broker_serves_its_console_on_every_store(store, tmp_path):
    options = ["--console", "--calls", "human.calls", "--console-allow-writes"]
    servers = None
    if store == "sqlite":
        options += ["--data", str(tmp_path / "data")]
    if store == "jetstream":
        servers = JetStreamCluster(1).__enter__()
        stream = f"CON{uuid.uuid4().hex[:10]}"
        options += ["--nats", servers.urls[0], "--store", "jetstream", "--stream", stream]
    else:
        options += ["--port", "0"]
    try:
        with DevBroker(*options, env=env_with()) as broker:
            if store == "jetstream":
                wait_serving(broker)
            url = console_url(broker)
            assert url.startswith("http://127.0.0.1:") and not url.endswith(":8780")
            assert broker.url is not None
            asyncio.run(register(broker.url, "agent.worker"))
            page = httpx.get(f"{url}/mailboxes", headers=BEARER, timeout=WAIT)
            assert page.status_code == 200 and "agent.worker" in page.text
            assert (
                "\\u202e"
                in httpx.get(f"{url}/mailboxes/agent.worker", headers=BEARER, timeout=WAIT).text
            )
            calls = httpx.get(f"{url}/api/calls", headers=BEARER, timeout=WAIT).json()
            assert [c["reply"] for c in calls["callers"]] == ["human.calls"]
            assert httpx.get(f"{url}/api/agents", timeout=WAIT).status_code == 401
            stopped_with_its_console(broker, url)
    finally:
        if servers is not None:
            servers.__exit__(None, None, None)


def test_a_console_that_cannot_start_stops_the_broker_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = DevBroker(
            "--port",
            "0",
            "--console",
            f"127.0.0.1:{port}",
            env=env_with(),
            wait=False,
        )
        with broker:
            assert broker.wait_exit(WAIT) == 1
            said = [line for line in broker.stderr if line.startswith("mq9-dev-broker: error")]
            assert len(said) == 1 and "the console did not start" in said[0], broker.output()
            assert "Address already in use" in said[0] and "Traceback" not in broker.output()
            assert "pick another --port" not in broker.output()
    bad = DevBroker("--port", "0", "--console", "nowhere", wait=False)
    with bad:
        assert bad.wait_exit(WAIT) == 1
        assert any("--console 'nowhere': give [HOST:]PORT" in line for line in bad.stderr)


def test_on_a_credentialed_broker_the_console_shows_what_its_credential_may_see(
    tmp_path: Path,
):
    data = tmp_path / "data"
    credentials = issue(data, "ops", "tenant2")
    options = ["--credentials", "--data", str(data), "--port", "0"]
    # without a credential of its own the console would be refused at every request
    with DevBroker(*options, "--console", env=env_with(), wait=False) as refused:
        assert refused.wait_exit(WAIT) == 1
        assert any("needs the console's own credential" in line for line in refused.stderr), (
            refused.output()
        )
    env = env_with(MQ9_CREDENTIAL=credentials["ops"])
    with DevBroker(*options, "--console", env=env) as broker:
        url = console_url(broker)
        assert broker.url is not None

        def as_agent(name: str) -> str:
            return broker.url.replace("nats://", f"nats://{credentials[name]}@", 1)

        asyncio.run(register(as_agent("ops"), "agent.ops"))
        asyncio.run(register(as_agent("tenant2"), "agent.tenant2"))
        for name in ("ops", "tenant2"):
            asyncio.run(set_aside(as_agent(name), f"agent.{name}"))
        page = httpx.get(f"{url}/mailboxes", headers=BEARER, timeout=WAIT)
        assert page.status_code == 200, page.text
        ours = re.search(
            r'<a href="/mailboxes/agent.ops">agent.ops</a></td>\s*<td[^>]*>(\d+)', page.text
        )
        assert ours and ours[1] == "1", page.text
        # #78: its own dead letters beside its mailbox and as a mailbox of their own
        mine, others = page.text.split('id="others"', 1)
        row = mine.split('<a href="/mailboxes/agent.ops">agent.ops</a>', 1)[1].split("</tr>")[0]
        assert '<a href="/mailboxes/agent.ops/dead-letters">1</a>' in row, row
        assert '<a href="/mailboxes/agent.ops.dlq">agent.ops.dlq</a>' in mine
        # the other tenant's mailbox apart, never a link; its dead letters not looked at
        assert "agent.tenant2" not in mine and "agent.tenant2.dlq" not in page.text
        theirs = others.split("agent.tenant2", 1)[1].split("</tr>", 1)[0]
        assert "not this console's to read" in theirs and "belongs to another agent" in theirs
        assert 'href="/mailboxes/agent.tenant2' not in page.text
        cards = httpx.get(f"{url}/agents", headers=BEARER, timeout=WAIT).text
        assert '<a class="mailbox-link" href="/mailboxes/agent.ops">' in cards
        assert 'href="/mailboxes/agent.tenant2' not in cards and "agent.tenant2" in cards
        one = httpx.get(f"{url}/mailboxes/agent.tenant2", headers=BEARER, timeout=WAIT)
        assert one.status_code == 400 and "belongs to another agent" in one.text
        assert "Traceback" not in one.text
        # the credential given in the environment opens the login page too
        login = httpx.post(f"{url}/login", data={"token": credentials["ops"]}, timeout=WAIT)
        assert login.status_code == 303
        stopped_with_its_console(broker, url)


def test_a_large_mailbox_s_page_never_fails_for_an_answer_s_size():
    """34 messages of 1 MB on the dev broker, which paces large answers (8 MiB/s) and refuses
    one that would wait behind too many: the page reads once, its reads and the sampler's
    take turns, and it counts the 3 past the QUERY's 31 with a read from there."""
    with DevBroker("--port", "0", "--console", env=env_with()) as broker:
        url = console_url(broker)
        assert broker.url is not None

        async def fill() -> None:
            async with Mq9Client(broker.url, request_timeout=WAIT) as client:
                await client.mailbox_create(name="team.big")
                for n in range(34):
                    await client.send("team.big", f"{n:04d}" + "x" * 999_996)

        asyncio.run(fill())
        for _ in range(4):
            page = httpx.get(f"{url}/mailboxes/team.big", headers=BEARER, timeout=WAIT)
            assert page.status_code == 200, page.text
            assert 'id="total">34<' in page.text
            time.sleep(1)  # (the sampler looks meanwhile)
        rest = httpx.get(
            f"{url}/api/mailboxes/team.big?from_id=31", headers=BEARER, timeout=WAIT
        ).json()
        assert [m["msg_id"] for m in rest["messages"]] == [31, 32, 33]
        stopped_with_its_console(broker, url)


METRICS_LINE = re.compile(r"mq9 (console|dev broker) metrics on (http://\S+/metrics)")


def metrics_urls(broker: DevBroker) -> dict[str, str]:
    """The broker's and its console's scrape URLs, as they printed them."""

    def printed() -> dict[str, str] | None:
        lines = broker.stdout + broker.stderr
        found = {m[1]: m[2] for line in lines if (m := METRICS_LINE.search(line))}
        assert len(found) == 2 or broker.process.poll() is None, broker.output()
        return found if len(found) == 2 else None

    what = "both metrics URLs printed"
    return until_sync(printed, timeout=WAIT, what=what, every=0.1, show=broker.output)


def test_the_broker_s_console_is_scraped_at_its_own_metrics_address(tmp_path: Path):
    """#73: ``--console-metrics`` gives the console's process its ``--metrics``; on a
    credentialed broker with a second tenant, the console's refused read of the other's
    mailbox is counted by the console (a 4xx page) and by the broker (a not_owner refusal)."""
    data = tmp_path / "data"
    credentials = issue(data, "ops", "tenant2")
    env = env_with(MQ9_CREDENTIAL=credentials["ops"])
    options = ["--credentials", "--data", str(data), "--port", "0"]
    options += ["--metrics", "127.0.0.1:0", "--console", "--console-metrics", "127.0.0.1:0"]
    with DevBroker(*options, env=env) as broker:
        url = console_url(broker)
        scrapes = metrics_urls(broker)
        assert scrapes["console"] != scrapes["dev broker"]
        assert broker.url is not None
        as_tenant2 = broker.url.replace("nats://", f"nats://{credentials['tenant2']}@", 1)
        asyncio.run(register(as_tenant2, "agent.tenant2"))
        one = httpx.get(f"{url}/mailboxes/agent.tenant2", headers=BEARER, timeout=WAIT)
        assert one.status_code == 400 and "belongs to another agent" in one.text
        console = httpx.get(scrapes["console"], timeout=WAIT).text
        assert 'mq9_console_http_requests_total{route="mailboxes",status="4xx"} 1.0' in console
        assert httpx.get(scrapes["console"].replace("/metrics", "/readyz"),
                         timeout=WAIT).status_code == 200  # fmt: skip
        held = httpx.get(scrapes["dev broker"], timeout=WAIT).text
        refused = re.search(
            r'mq9_broker_refusals_total\{command="QUERY",reason="not_owner"\} (\d+)', held
        )
        assert refused and int(float(refused[1])) >= 1, held
        assert 'reason="other"' not in held, held
        stopped_with_its_console(broker, url)


def test_console_metrics_refused_in_one_line_without_a_console_or_an_address():
    for options, said in (
        (["--console-metrics", "127.0.0.1:0"], "--console-metrics is the console's"),
        (["--console", "--console-metrics", "nowhere"], "--console-metrics 'nowhere': give"),
    ):
        bad = DevBroker("--port", "0", *options, env=env_with(), wait=False)
        with bad:
            assert bad.wait_exit(WAIT) == 1
            errors = [line for line in bad.stderr if line.startswith("mq9-dev-broker: error")]
            assert len(errors) == 1 and said in errors[0], bad.output()
            assert "Traceback" not in bad.output()
