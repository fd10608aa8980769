"""query_messages on a broker that cuts its answers to its answer size (the bundled broker keeps
each within its NATS server's max_payload or BrokerLimits.max_answer; RobustMQ sends what it read,
uncut; nothing in a cut answer says so): a page cut short is not the mailbox's end. A model that
calls exactly what each answer names reaches every message, in msg_id order, each once, and is
told "more follow" until the last page, on the in-process broker and served on a real
nats-server. The console's pages read the same way (operations/pages.py;
tests/cli/console/test_console_counts.py).

Here every answer is kept within 200,000 bytes: six messages of 30 KB fill one."""

from __future__ import annotations

import pytest

from langchain_mq9 import Mq9Toolkit
from mq9_platform.operations import pages
from testbed.brokers import start_broker, stop_broker
from tests.integration.operations.test_answer_budget import ask, ids, named_call

ANSWER = 200_000
BIG = "x" * 30_000
BUDGET = 9_000  # the tools' answer budget (max_answer_chars' default)


@pytest.fixture(params=["memory", pytest.param("nats", marks=pytest.mark.slow)])
async def cut_client(request):
    url = request.getfixturevalue("nats_server").url if request.param == "nats" else None
    broker, handle = await start_broker(request.param, url, max_answer=ANSWER)
    try:
        async with broker.client() as client:
            yield client
    finally:
        await stop_broker(broker, handle)


async def fill(client, box: str) -> list[int]:
    """33 messages of 30 KB, a few critical and urgent among the normal: their msg_ids."""
    await client.mailbox_create(name=box)
    plan = ["normal"] * 12 + ["critical"] * 3 + ["normal"] * 12 + ["urgent"] + ["normal"] * 5
    return [await client.send(box, f"{n:03d}{BIG}", priority=p) for n, p in enumerate(plan)]


async def walk(kit: Mq9Toolkit, box: str, **first) -> list[int]:
    """The msg_ids a model sees calling query_messages, then each next page the answer names,
    until an answer says no more follow."""
    page = await ask(kit, "query_messages", mail_address=box, **first)
    seen = ids(page)
    for _ in range(40):  # a hang guard: each page shows one message at least
        assert len(page.content) <= BUDGET
        step = page.answer.get("next_step") or ""
        if "More follow" not in step:
            return seen
        name, args = named_call(step, "next page")
        page = await ask(kit, name, **args)
        assert page.answer["count"] >= 1  # a page that said more follow shows more
        seen += ids(page)
    raise AssertionError("the pages never ended")


async def test_a_model_pages_a_cut_mailbox_to_its_end(cut_client):
    sent = await fill(cut_client, "box.cut")
    assert len(await cut_client.query("box.cut", limit=10)) < 10  # one answer is cut short
    async with Mq9Toolkit(client=cut_client) as kit:
        assert await walk(kit, "box.cut") == sent  # each once, in order, no end too soon
        # limit=100: every page is cut by the broker, never by the limit
        assert await walk(kit, "box.cut", limit=100) == sent
        # from an id, as a model pages on from where it was
        assert await walk(kit, "box.cut", from_id=sent[10]) == sent[10:]
        past = await ask(kit, "query_messages", mail_address="box.cut", from_id=sent[-1] + 1)
        assert past.answer["count"] == 0 and "No message from msg_id" in past.answer["next_step"]


async def test_a_page_of_urgent_messages_filling_the_answer_says_what_it_may_miss(cut_client):
    """A read from an id answers the critical lane first: ten critical messages of 30 KB fill
    the answer before the normal one below them is reached. The page shows what it read, says
    that less urgent messages among its ids may be missing, and the pages go on to the end."""
    await cut_client.mailbox_create(name="box.urgent")
    await cut_client.send("box.urgent", "first")
    below = await cut_client.send("box.urgent", "normal, under the critical ones")
    critical = [
        await cut_client.send("box.urgent", f"{n}{BIG}", priority="critical") for n in range(10)
    ]
    async with Mq9Toolkit(client=cut_client) as kit:
        page = await ask(kit, "query_messages", mail_address="box.urgent", from_id=below)
        shown = ids(page)
        assert shown and set(shown) <= set(critical) and below not in shown
        assert "Less urgent messages between msg_id" in page.answer["note"]
        assert "fetch_messages takes every one in turn" in page.answer["note"]
        assert await walk(kit, "box.urgent", from_id=below) == critical
    # read-only, fetch_messages is a look from the same start each time: it takes no turns
    async with Mq9Toolkit(client=cut_client, read_only=True) as kit:
        page = await ask(kit, "query_messages", mail_address="box.urgent", from_id=below)
        assert "Less urgent messages between msg_id" in page.answer["note"]
        assert "takes every one in turn" not in page.answer["note"]
        assert "does not reach them either" in page.answer["note"]


async def test_a_page_cut_right_after_the_critical_lane_says_what_it_may_miss(cut_client):
    """Six critical messages of 30 KB fill the answer of a read from the normal one below them:
    the broker cuts right after the critical lane's last message, and a read from past it finds
    nothing. The id missing below the page's highest tells the cut (a mailbox's msg_ids are
    consecutive): the page says less urgent messages may be missing there, and what reaches
    them."""
    await cut_client.mailbox_create(name="box.edge")
    await cut_client.send("box.edge", "first")
    below = await cut_client.send("box.edge", f"normal{BIG}")
    critical = [
        await cut_client.send("box.edge", f"{n}{BIG}", priority="critical") for n in range(6)
    ]
    read = await pages.page(cut_client, "box.edge", below)
    assert [m.msg_id for m in read.messages] == critical and read.next_from is None
    assert f"between msg_id {below} and {critical[-1]} may be missing here" in read.hidden
    async with Mq9Toolkit(client=cut_client) as kit:
        page = await ask(kit, "query_messages", mail_address="box.edge", from_id=below)
        assert ids(page) == critical
        assert f"Less urgent messages between msg_id {below} and" in page.answer["note"]
        assert "fetch_messages takes every one in turn" in page.answer["note"]


async def test_a_page_ends_before_an_id_missing_above_its_start(cut_client):
    """The same cut with a critical message below the normal one: the page from it ends
    before the missing id (every lane is whole up to there), and the page from the missing id
    has one more urgent message fewer ahead of it, so its answer reaches the normal lane."""
    await cut_client.mailbox_create(name="box.step")
    await cut_client.send("box.step", "first")
    plan = ["critical", "normal"] + ["critical"] * 5
    sent = [await cut_client.send("box.step", f"{n}{BIG}", priority=p) for n, p in enumerate(plan)]
    read = await pages.page(cut_client, "box.step", sent[0])
    assert [m.msg_id for m in read.messages] == sent[:1] and read.next_from == sent[1]
    assert read.hidden is None
    async with Mq9Toolkit(client=cut_client) as kit:
        assert await walk(kit, "box.step", from_id=sent[0]) == sent


async def test_a_deleted_id_under_urgent_messages_may_be_missing(cut_client):
    """A deleted message and one a cut answer hid look alike (no read tells them apart: a
    FETCH's num_msgs counts across lanes, and QUERY's since does nothing): the page says less
    urgent messages may be missing there, not that they are. A page holding every id from its
    start says nothing."""
    await cut_client.mailbox_create(name="box.gone")
    await cut_client.send("box.gone", "first")
    gone = await cut_client.send("box.gone", "deleted", priority="critical")
    kept = await cut_client.send("box.gone", "kept", priority="critical")
    await cut_client.delete("box.gone", gone)
    read = await pages.page(cut_client, "box.gone", gone)
    assert [m.msg_id for m in read.messages] == [kept] and read.next_from is None
    assert f"between msg_id {gone} and {kept} may be missing" in read.hidden
    assert await pages.page(cut_client, "box.gone", kept) == pages.Page(read.messages, None)
