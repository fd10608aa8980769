"""The console in a real headless Chromium: a person logs in, finds an agent, opens its mailbox
and sees a message arrive without reloading, replays a dead letter, answers the question a
waiting call asks and sees the call complete. Each page's screenshot is kept
(console_world.SHOTS). Hostile payloads stay inert text on every page."""

from __future__ import annotations

import pytest
from langgraph.types import interrupt

from langchain_mq9 import serve_agent
from mq9_cli import overview
from mq9_cli.console.pages import MESSAGE_PREVIEW_BYTES
from mq9_platform import AgentCaller
from mq9_platform.groups.reader import GroupReader
from testbed.support.a2a_support import text_graph, text_io
from tests.cli.console.console_world import TOKEN, World, browser, shoot

pytestmark = pytest.mark.slow
WAIT = 60  # seconds: a hang guard, never a timing assertion

HOSTILE = (
    '<script>window.__owned = "script"</script>'
    '<img src="x" onerror="window.__owned = \'img\'">'
    "<a href=\"javascript:window.__owned = 'link'\">click me</a>"
)


def asking_hostile(text: str) -> str:
    return f"{text}: {interrupt(HOSTILE)}"


def asking(text: str) -> str:
    return f"{text} in {interrupt('Which language?')}"


@pytest.fixture
def driver():
    chrome = browser()
    try:
        yield chrome
    finally:
        chrome.quit()


def wait_for(driver, condition, what: str):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # (a page being replaced by the next one leaves its elements stale: look again)
    waiting = WebDriverWait(
        driver, WAIT, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
    )
    return waiting.until(condition, message=what)


def wait_live(driver) -> None:
    """Until the mailbox page's event stream is open."""
    live = "return document.getElementById('live-state').textContent"
    wait_for(driver, lambda d: d.execute_script(live) == "live", "the event stream")


def log_in(driver, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/agents")
    assert driver.find_element(By.ID, "login")  # refused until logged in
    shoot(driver, "login")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    # (the login page was shown at /agents too: wait for what only a session sees)
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "header nav"), "a session")
    assert driver.current_url.endswith("/agents")


async def _register(client, name: str, capabilities: str) -> None:
    args = {"name": name, "capabilities": capabilities}
    await overview.operate(client, "agent_register", args)


async def serve(client, work, name: str, description: str):
    """A one-node graph running ``work`` served as the A2A agent ``name``."""
    card = {"description": description}
    return await serve_agent(text_graph(work), name=name, client=client, card=card, **text_io())


async def _dead_letter(client, mailbox: str, payload: str, reason: str) -> None:
    await client.mailbox_create(name=mailbox)
    await client.send(mailbox, payload)
    reader = GroupReader(client, mailbox, "workers")
    [message] = await reader.fetch()
    await reader.dead_letter(message.msg_id, reason)


def test_a_person_steers_the_mail_in_a_browser(driver):
    from selenium.webdriver.common.by import By

    with World(allow_writes=True, reply_mailboxes=("human.calls",)) as world:
        client = world.client
        world.run(_register(client, "agent.translator", "translates English to Japanese"))
        world.run(_register(client, "agent.billing", "sends invoices to customers"))
        world.run(client.send("agent.translator", "translate: good morning", priority="urgent"))
        world.run(_dead_letter(client, "team.jobs", "a job that always fails", "KeyError: 'id'"))

        agent = world.run(
            serve(client, asking, "agent.greeter", "greets people, in the language you choose")
        )
        try:
            log_in(driver, world.url)

            # find an agent
            search = driver.find_element(By.ID, "q")
            search.send_keys("translation to Japanese")
            search.submit()
            wait_for(
                driver,
                lambda d: (
                    "q=" in d.current_url
                    and d.find_elements(By.CSS_SELECTOR, ".agent-name")[0].text
                    == "agent.translator"
                ),
                "agent.translator found first",
            )
            shoot(driver, "agents")

            # open its mailbox, and see a message arrive live
            driver.find_elements(By.CSS_SELECTOR, ".mailbox-link")[0].click()
            wait_for(driver, lambda d: d.find_elements(By.ID, "messages"), "the mailbox page")
            assert "translate: good morning" in driver.find_element(By.ID, "messages").text
            assert driver.find_element(By.ID, "count-urgent").text == "1"
            wait_live(driver)
            world.run(client.send("agent.translator", "translate: good night"))
            wait_for(
                driver,
                lambda d: "translate: good night" in d.find_element(By.ID, "messages").text,
                "the message arriving live",
            )
            assert driver.find_element(By.ID, "count-normal").text == "1"
            shoot(driver, "mailbox")

            driver.get(world.url + "/mailboxes")
            rows = driver.find_element(By.ID, "mailboxes").text
            assert "agent.translator" in rows and "team.jobs" not in rows.split("\n")[0]
            shoot(driver, "mailboxes")

            # replay a dead letter
            driver.get(world.url + "/mailboxes/team.jobs/dead-letters")
            letters = driver.find_element(By.ID, "letters").text
            assert "KeyError: 'id'" in letters and "waiting" in letters
            shoot(driver, "dead-letters")
            driver.find_element(By.CSS_SELECTOR, "#replay button").click()
            wait_for(driver, lambda d: d.find_elements(By.ID, "notice"), "the replay's notice")
            assert (
                "sent 1 dead letter back to team.jobs" in driver.find_element(By.ID, "notice").text
            )
            assert "replayed" in driver.find_element(By.CSS_SELECTOR, ".letter .status").text
            back = [m.text() for m in world.run(client.query("team.jobs"))]
            assert back.count("a job that always fails") == 2
            shoot(driver, "dead-letters-replayed")

            # answer a waiting question, and see the call complete
            caller = AgentCaller(client, "human.calls")
            asked = world.run(caller.call("agent.greeter", "greet the team", wait=WAIT))
            assert asked.state == "TASK_STATE_INPUT_REQUIRED"
            driver.get(world.url + "/calls")
            table = driver.find_element(By.CSS_SELECTOR, "table.calls").text
            assert "input-required" in table and "Which language?" in table
            shoot(driver, "calls")
            driver.find_element(By.LINK_TEXT, "answer").click()
            wait_for(driver, lambda d: d.find_elements(By.ID, "answer"), "the answer form")
            shoot(driver, "call-question")
            driver.find_element(By.ID, "answer").send_keys("French")
            driver.find_element(By.CSS_SELECTOR, "#answer-form button").click()
            wait_for(
                driver,
                lambda d: d.find_element(By.ID, "state").text == "completed",
                "the call completing on the page",
            )
            assert driver.find_element(By.ID, "result").text == "greet the team in French"
            assert world.run(caller.check(asked.task_id)).state == "TASK_STATE_COMPLETED"
            timeline = driver.find_element(By.ID, "timeline")
            wait_for(
                driver,
                lambda d: d.execute_script(
                    "return arguments[0].complete && arguments[0].naturalWidth > 0", timeline
                ),
                "the timeline picture",
            )
            shoot(driver, "call-completed")
        finally:
            world.run(agent.stop())


INERT_CHECK = """
return {
  owned: window.__owned || null,
  scripts: document.querySelectorAll('main script').length,
  handlers: document.querySelectorAll('main [onerror], main [onload]').length,
  links: document.querySelectorAll('main a[href^="javascript:"]').length,
  text: document.querySelector('main').textContent,
};
"""


def assert_inert(driver, where: str, *, visible: bool = True) -> None:
    found = driver.execute_script(INERT_CHECK)
    assert found["owned"] is None, where
    assert (found["scripts"], found["handlers"], found["links"]) == (0, 0, 0), where
    if visible:
        assert "<script>window.__owned" in found["text"], where


def test_hostile_payloads_are_inert_text_on_every_page(driver):
    from selenium.webdriver.common.by import By

    big = "A" * 1_000_000 + HOSTILE
    with World(
        allow_writes=True, reply_mailboxes=("human.calls",), mailboxes=("team.hostile",)
    ) as world:
        client = world.client
        world.run(_register(client, "agent.mallory", HOSTILE))
        world.run(client.mailbox_create(name="team.hostile"))
        world.run(client.send("team.hostile", HOSTILE, key=HOSTILE[:40].replace(" ", "")))
        world.run(client.send("team.hostile", big))
        world.run(_dead_letter(client, "team.bad", HOSTILE, HOSTILE))

        agent = world.run(serve(client, asking_hostile, "agent.asker", HOSTILE))
        try:
            asked = world.run(
                AgentCaller(client, "human.calls").call("agent.asker", HOSTILE, wait=WAIT)
            )
            log_in(driver, world.url)
            assert_inert(driver, "agents")
            pages = [
                "/mailboxes",
                "/mailboxes/team.hostile",
                "/mailboxes/team.hostile/messages/0",
                "/mailboxes/team.bad/dead-letters",
                "/calls",
                f"/calls/human.calls/{asked.task_id}",
            ]
            for page in pages:
                driver.get(world.url + page)
                assert_inert(driver, page, visible=page != "/mailboxes")
            driver.get(world.url + "/mailboxes/team.hostile/messages/1")
            # (#91 item 5) its first 64 KiB, its size, and the whole as a download
            assert_inert(driver, "the 1 MB message", visible=False)
            length = driver.execute_script(
                "return document.getElementById('payload').textContent.length"
            )
            assert length == MESSAGE_PREVIEW_BYTES
            size = driver.find_element(By.ID, "payload-size").text
            assert size == f"{len(big.encode()):,} bytes", size
            shoot(driver, "hostile-message")

            driver.get(world.url + "/mailboxes/team.hostile")
            wait_live(driver)
            world.run(client.send("team.hostile", "live: " + HOSTILE))
            wait_for(
                driver,
                lambda d: "live: <script>" in d.find_element(By.ID, "messages").text,
                "the hostile message arriving live",
            )
            assert_inert(driver, "a live row")
            shoot(driver, "hostile-mailbox")
        finally:
            world.run(agent.stop())


def test_an_operator_searches_acts_on_one_message_and_reads_the_log(driver):
    """#73: search past a page, a JSON payload indented, a message set aside from its page,
    that one dead letter replayed, and the log saying who did it; an override shown as an
    escape."""
    from selenium.webdriver.common.by import By

    with World(allow_writes=True) as world:
        client = world.client
        world.run(client.mailbox_create(name="team.orders"))
        for n in range(120):
            world.run(client.send("team.orders", f"order {n}", tags=["eu"] if n % 40 else None))
        world.run(client.send("team.orders", '{"order": 120, "ship_to": "\u202eexe.txt"}'))
        log_in(driver, world.url)

        driver.get(world.url + "/mailboxes/team.orders")
        rows = driver.find_elements(By.CSS_SELECTOR, "#messages tr.message")
        assert len(rows) == 100
        driver.find_element(By.ID, "next-page").click()
        wait_for(driver, lambda d: "from_id=100" in d.current_url, "the next page")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#messages tr.message")) == 21
        shoot(driver, "mailbox-next-page")
        text = driver.find_element(By.ID, "search-text")
        text.send_keys("ship_to")
        text.submit()
        wait_for(driver, lambda d: "text=ship_to" in d.current_url, "the search")
        [found] = driver.find_elements(By.CSS_SELECTOR, "#messages tr.message")
        assert "\\u202eexe.txt" in found.text and "\u202e" not in found.text
        shoot(driver, "mailbox-search")

        driver.get(world.url + "/mailboxes/team.orders/messages/120")
        payload = driver.find_element(By.ID, "payload").text
        assert payload.startswith('{\n  "order": 120,') and "\\u202eexe.txt" in payload
        driver.find_element(By.ID, "set-aside-reason").send_keys("no such country")
        shoot(driver, "message-actions")
        driver.find_element(By.CSS_SELECTOR, "#set-aside-form button").click()
        wait_for(driver, lambda d: d.find_elements(By.ID, "notice"), "the set-aside's notice")
        assert "set message 120 aside" in driver.find_element(By.ID, "notice").text

        driver.get(world.url + "/mailboxes/team.orders/dead-letters")
        assert "no such country" in driver.find_element(By.ID, "letters").text
        driver.find_element(By.CSS_SELECTOR, "form.replay-one button").click()
        wait_for(driver, lambda d: d.find_elements(By.ID, "notice"), "the replay's notice")
        assert "sent dead letter 0 back to team.orders" in driver.find_element(By.ID, "notice").text
        shoot(driver, "dead-letter-replayed-one")

        driver.get(world.url + "/log")
        log = driver.find_element(By.ID, "log").text
        assert "set-aside" in log and "replay" in log and "the console token from" in log
        shoot(driver, "log")
        assert_inert(driver, "the log", visible=False)
