"""(#107) The console shows the mail that is scheduled and not yet due: a message sent with a
delay is in no read until it is due, so a mailbox of N + M delayed read N (round 9: 2,000 + 50
read 2,000 until the delay ended, and nothing said 50 more were coming). Where the broker
counts a mailbox (the bundled broker's ``$mq9.AI.MSG.COUNT``: ``scheduled`` and ``next_due``)
the mailbox's page, the list and the JSON API say how many are held and when the next is due,
for a mailbox its QUERY holds whole and for one counted past it; where the broker answers no
count (RobustMQ: the COUNT command taken away here) they say it is not told, never 0.

The broker's clock is a fixed second (``BrokerEngine(clock=...)``): the delayed messages stay
not yet due, and the time shown is that second plus the delay, whatever the machine's clock."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from console_world import TOKEN, World, browser, shoot
from test_console_mixed_counts import log_in

from mq9_broker import BrokerEngine
from mq9_broker.engine.engine import COMMANDS
from mq9_cli import overview
from mq9_cli.console import census
from mq9_cli.render import when
from mq9_wire.protocol.subjects import MSG_COUNT
from testbed.support.waiting import until_sync

pytestmark = pytest.mark.slow  # a broker, the console, a browser
WAIT = 60  # seconds: a hang guard, never a timing assertion
NOW = 1_800_000_000  # the broker's second, fixed
DELAYS = (3600, 600, 7200)  # the soonest due NOW + 600


def fixed() -> BrokerEngine:
    return BrokerEngine(search=False, clock=lambda: float(NOW))


def fill(world: World, address: str, due: int, delayed: int) -> None:
    client = world.client
    world.run(client.mailbox_create(name=address))
    for n in range(due):
        world.run(client.send(address, f"now {n}"))
    for n in range(delayed):
        world.run(client.send(address, f"later {n}", delay=DELAYS[n % len(DELAYS)]))


def api(world: World, address: str) -> dict:
    headers = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=world.url, timeout=WAIT, headers=headers) as http:
        return http.get(f"/api/mailboxes/{address}").json()


@pytest.mark.parametrize(("due", "delayed"), [(20, 5), (150, 7)], ids=["whole", "counted-on"])
def test_the_scheduled_count_and_the_next_due_time_are_shown(due, delayed):
    address = f"team.later{due}"
    with World(engine=fixed(), mailboxes=(address,)) as world:
        fill(world, address, due, delayed)
        # a count the console made while the mail was still going in stands ASKED_SECONDS
        # (the depth sampler looks at every mailbox it shows): the next one counts it all
        found = until_sync(
            lambda: (f := api(world, address))["total"] == due and f,
            timeout=WAIT, what=f"{address} counted to {due}", every=0.5,
            show=lambda: api(world, address),
        )
        assert found["total"] == due and not found["total_is_lower_bound"], found
        assert found["capped"] == (due > overview.QUERY_CAP)
        assert (found["scheduled"], found["next_due"]) == (delayed, NOW + 600), found
        driver = browser()
        try:
            log_in(driver, world.url)
            driver.get(world.url + f"/mailboxes/{address}")
            assert driver.find_element("id", "total").text == str(due)
            assert driver.find_element("id", "scheduled").text == str(delayed)
            assert driver.find_element("id", "next-due").text == when(NOW + 600)
            shoot(driver, f"scheduled-{address}")

            def listed() -> str:
                driver.get(world.url + "/mailboxes")
                rows = driver.find_elements("css selector", "#mailboxes tbody tr")
                cells = [r.find_element("css selector", "td.scheduled").text for r in rows
                         if r.find_element("tag name", "td").text == address]  # fmt: skip
                return cells[0] if cells else ""

            shown = until_sync(listed, timeout=WAIT, what=f"{address} listed", every=0.5)
            assert shown == f"{delayed} (next {when(NOW + 600)})", shown
        finally:
            driver.quit()


def test_a_broker_that_answers_no_count_shows_the_schedule_as_not_told(monkeypatch):
    """RobustMQ answers nothing on the COUNT subject: not told, never 0 (an older bundled
    broker, whose count says nothing of them, the same: census.asked's ``scheduled`` None)."""
    monkeypatch.delitem(COMMANDS, MSG_COUNT)
    monkeypatch.setattr(census, "ASK_SECONDS", 0.5)  # each unanswered ask: a short look
    with World(engine=fixed(), mailboxes=("team.untold",)) as world:
        fill(world, "team.untold", 20, 5)
        found = api(world, "team.untold")
        assert found["total"] == 20 and found["scheduled"] is None and found["next_due"] is None
        headers = {"authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=world.url, timeout=WAIT, headers=headers) as http:
            page = http.get("/mailboxes/team.untold").text
            listed = http.get("/mailboxes").text
        assert 'id="scheduled" data-told="no">not told<' in page, page
        assert "RobustMQ answers no count" in page
        assert 'class="scheduled unknown"' in listed and ">not told<" in listed


async def _old_count(address: str) -> tuple[dict[str, int], int | None]:
    return {"critical": 0, "urgent": 0, "normal": 3}, 2


class _OlderClient:
    """A client whose count reads the lanes alone (no ``count_answer``)."""

    lane_counts = staticmethod(_old_count)


def test_a_count_without_the_schedule_tells_none():
    told = asyncio.run(census.asked(_OlderClient(), "team.old", [], lambda: float(NOW)))  # type: ignore[arg-type]
    assert told is not None and told.total == 3
    assert told.scheduled is None and told.next_due is None
