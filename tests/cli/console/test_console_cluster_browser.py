"""#73's deployment: the credentialed JetStream cluster of docs/deploy.md (three nats-servers
configured as ``mq9-dev-broker credentials setup`` prints, the broker ``--nats A,B,C --store
jetstream --credentials DIR --console``) with two tenants. In a real headless Chromium the
console lists every page: what its credential owns in full, the other tenant's mailbox apart as
not its own and never a link, never a failed page."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os

import pytest
from console_world import TOKEN, browser, shoot
from test_console_deployments import console_url, stopped_with_its_console

import mq9_broker.cli.credentials as credentials_cli
from mq9_platform import Mq9Client
from mq9_platform.groups.dead_letters import dead_letter_address
from mq9_platform.groups.dead_letters import store as store_dead_letter
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.jetstream_servers import JetStreamCluster, wait_serving

pytestmark = pytest.mark.slow  # three nats-servers, a broker, its console and a browser
pytest.importorskip("nkeys")


def credentials(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert credentials_cli.main(list(argv)) == 0
    return out.getvalue()


async def tenant(url: str, credential: str, name: str) -> None:
    """An agent of its own tenant: its mailbox, its card, a message, a dead letter."""
    login = url.replace("nats://", f"nats://{credential}@", 1)
    async with Mq9Client(login, request_timeout=60) as client:
        await client.mailbox_create(name=name)
        card = {"name": name, "capabilities": f"the work of {name}", "mailbox": name}
        await client.agent_register(card)
        await client.send(name, '{"order": 7, "note": "ship \u202eexe.txt"}')
        await client.send(name, '{"order": 8}')
        poison = (await client.query(name))[-1]  # set aside as a group sets a poison one aside
        dlq, why = dead_letter_address(name), "no such customer"
        await store_dead_letter(
            client, dlq, poison, mailbox=name, group="orders", attempts=3, reason=why
        )


def test_the_console_lists_every_page_on_the_credentialed_cluster(tmp_path):
    from selenium.webdriver.common.by import By

    driver = browser()
    setup = tmp_path / "mq9-auth"
    config = credentials("setup", str(setup))
    try:
        with JetStreamCluster(3, extra_config=config) as cluster:
            nats = ",".join(cluster.urls)

            def issue(name: str) -> str:
                argv = ["issue", name, "--credentials", str(setup), "--nats", nats]
                return credentials(*argv).splitlines()[0]

            ops, other = issue("ops"), issue("tenant2")
            env = {**os.environ, "MQ9_CONSOLE_TOKEN": TOKEN, "MQ9_CREDENTIAL": ops}
            args = ["--nats", nats, "--store", "jetstream", "--credentials", str(setup)]
            args += ["--no-search", "--console", "--calls", "agent.ops.calls"]
            with DevBroker(*args, "--console-allow-writes", env=env) as broker:
                wait_serving(broker)
                url = console_url(broker)
                asyncio.run(tenant(cluster.urls[1], ops, "agent.ops"))
                asyncio.run(tenant(cluster.urls[2], other, "agent.tenant2"))

                driver.get(url + "/login")
                driver.find_element(By.ID, "token").send_keys(TOKEN)
                driver.find_element(By.CSS_SELECTOR, "#login button").click()
                pages = {
                    "cluster-agents": "/agents",
                    "cluster-mailboxes": "/mailboxes",
                    "cluster-mailbox": "/mailboxes/agent.ops",
                    "cluster-message": "/mailboxes/agent.ops/messages/0",
                    "cluster-dead-letters": "/mailboxes/agent.ops/dead-letters",
                    "cluster-calls": "/calls",
                    "cluster-log": "/log",
                }
                for name, path in pages.items():
                    driver.get(url + path)
                    text = driver.find_element(By.TAG_NAME, "main").text
                    assert "Could not do that" not in text and "Log in" not in text, (path, text)
                    assert "\u202e" not in text, path
                    shoot(driver, name)
                driver.get(url + "/mailboxes")
                rows = {
                    row.find_element(By.TAG_NAME, "td").text: row.text
                    for row in driver.find_elements(By.CSS_SELECTOR, "#mailboxes tbody tr")
                }
                assert rows["agent.ops"].split()[1] == "2", rows
                assert rows["agent.ops"].split()[-1] == "1", rows  # its one dead letter
                assert rows["agent.ops.dlq"].split()[1] == "1", rows
                assert "agent.tenant2" not in rows and "agent.tenant2.dlq" not in rows, rows
                others = {  # #78: another tenant's apart, never a link
                    row.find_element(By.TAG_NAME, "td").text: row.text
                    for row in driver.find_elements(By.CSS_SELECTOR, "#others tbody tr")
                }
                assert "not this console's to read" in others["agent.tenant2"], others
                assert "belongs to another agent" in others["agent.tenant2"], others
                assert not driver.find_elements(By.CSS_SELECTOR, "#others a")
                driver.get(url + "/agents")
                links = driver.find_elements(By.CSS_SELECTOR, ".mailbox-link")
                assert [a.text for a in links] == ["agent.ops"], [a.text for a in links]
                driver.get(url + "/mailboxes/agent.ops/messages/0")
                payload = driver.find_element(By.ID, "payload").text
                assert '"order": 7,' in payload and "\\u202eexe.txt" in payload
                stopped_with_its_console(broker, url)
    finally:
        driver.quit()
