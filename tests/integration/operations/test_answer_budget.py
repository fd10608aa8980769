"""Tool answers sized for a model's context (issue #43): a look is a page that says how to
page on, and every answer fits ``max_answer_chars`` as the model reads it without losing a
message: each entry gets its share (cut, and marked so) before the last are left out.

Each test runs on every broker of the ``client`` fixture (``memory://`` and the bundled broker
on a real nats-server), as a model would use the tools: the exact calls an answer names are the
calls made next.
"""

from __future__ import annotations

import ast
import json
import re

import pytest

from langchain_mq9 import Mq9Toolkit
from mq9_platform import Mq9Client


async def ask(kit: Mq9Toolkit, name: str, **args):
    """One tool call as an agent graph makes it: the ToolMessage, content parsed as ``.answer``."""
    tool = {t.name: t for t in kit.get_tools()}[name]
    message = await tool.ainvoke({"name": name, "args": args, "id": "call_1", "type": "tool_call"})
    message.answer = json.loads(message.content) if message.status != "error" else None
    return message


def named_call(text: str, label: str) -> tuple[str, dict]:
    """The call ``text`` names after ``label`` ("the newest query_messages(from_id=140)"), as
    a tool name and its arguments."""
    found = re.search(rf"{label} (\w+)\(([^)]*)\)", text)
    assert found, (label, text)
    args = {}
    for pair in filter(None, found[2].split(", ")):
        key, value = pair.split("=", 1)
        args[key] = ast.literal_eval(value)
    return found[1], args


def ids(message) -> list[int]:
    return [m["msg_id"] for m in message.answer["messages"]]


async def seed(client, box: str, payloads: list[str], priorities: list[str] | None = None):
    await client.mailbox_create(name=box)
    for n, payload in enumerate(payloads):
        await client.send(box, payload, priority=priorities[n] if priorities else "normal")


# -- a look is a page --------------------------------------------------------------------------


async def test_the_newest_of_150_messages_is_reached_in_two_calls(client):
    priorities = ["urgent" if n % 5 == 0 else "critical" if n % 11 == 0 else "normal"
                  for n in range(150)]  # fmt: skip
    await seed(client, "agent.me", [f"message {n}" for n in range(150)], priorities)
    async with Mq9Toolkit(client=client, agent_mailbox="agent.me") as kit:
        first = await ask(kit, "query_messages")
        assert ids(first) == list(range(10))  # a page, oldest first
        step = first.answer["next_step"]
        assert "up to msg_id 149" in step and "next page query_messages(from_id=10)" in step
        name, args = named_call(step, "the newest")
        second = await ask(kit, name, **args)
        assert ids(second) == list(range(140, 150))
        assert second.answer["messages"][-1]["payload"] == "message 149"
        assert "More follow" not in second.answer["next_step"]  # the end: only "Earlier"
        # Nothing was taken: a group still gets every message.
        assert len(await client.fetch("agent.me", group_name="g", deliver="earliest",
                                      num_msgs=200, max_wait_ms=0)) == 150  # fmt: skip


async def test_the_newest_is_found_when_the_last_message_written_is_gone(client):
    await seed(client, "agent.me", [f"message {n}" for n in range(40)])
    for gone in (39, 38, 37):  # RobustMQ's latest starts at the last written: deleted here
        await client.delete("agent.me", gone)
    async with Mq9Toolkit(client=client, agent_mailbox="agent.me") as kit:
        first = await ask(kit, "query_messages")
        assert "up to msg_id 36" in first.answer["next_step"]
        name, args = named_call(first.answer["next_step"], "the newest")
        second = await ask(kit, name, **args)
        assert ids(second) == list(range(27, 37))


async def test_a_page_from_an_id_holds_every_priority_in_msg_id_order(client):
    # From msg_id 10 on, more urgent messages than a page: a FETCH of 11 reads only the urgent
    # lane, and the normal ones among them (12, 15) must still be on the page.
    priorities = ["normal"] * 10 + ["normal" if n in (12, 15) else "urgent" for n in range(10, 40)]
    await seed(client, "box.mixed", [f"m{n}" for n in range(40)], priorities)
    async with Mq9Toolkit(client=client) as kit:
        page = await ask(kit, "query_messages", mail_address="box.mixed", from_id=10, limit=5)
        assert ids(page) == [10, 11, 12, 13, 14]
        step = page.answer["next_step"]
        assert "Earlier: query_messages(mail_address='box.mixed', from_id=5, limit=5)" in step
        name, args = named_call(step, "next page")
        assert ids(await ask(kit, name, **args)) == [15, 16, 17, 18, 19]
        past = await ask(kit, "query_messages", mail_address="box.mixed", from_id=99)
        assert past.answer["count"] == 0
        assert past.answer["next_step"] == (
            "No message from msg_id 99 on: the newest are "
            "query_messages(mail_address='box.mixed', from_id=30)."
        )


async def test_a_page_behind_over_100_urgent_messages_reads_deeper_and_misses_none(client):
    # A FETCH reads the normal lane only when the urgent one holds fewer than it asked for: a
    # page of 10 from msg_id 1 reads 10 urgent messages and never reaches the normal one at 5,
    # so it asks once more for 1,000 (pages.DEEP_ASK), which reaches every lane.
    priorities = ["normal"] + ["normal" if n == 5 else "urgent" for n in range(1, 120)]
    await seed(client, "box.urgent", [f"m{n}" for n in range(120)], priorities)
    async with Mq9Toolkit(client=client) as kit:
        page = await ask(kit, "query_messages", mail_address="box.urgent", from_id=1)
        assert ids(page) == list(range(1, 11)) and "missing" not in page.answer["note"]
        whole = await ask(kit, "query_messages", mail_address="box.urgent")  # QUERY: all lanes
        assert ids(whole) == list(range(10)) and "missing" not in whole.answer["note"]


# -- every answer has a budget -----------------------------------------------------------------


async def test_a_message_larger_than_the_budget_is_cut_to_fit_and_marked(client):
    texts = [f"{n}:" + "x" * 3000 for n in range(3)]
    await seed(client, "agent.me", texts)
    async with Mq9Toolkit(client=client, agent_mailbox="agent.me", max_answer_chars=1000) as kit:
        looked = await ask(kit, "query_messages", limit=1)
        assert len(looked.content) <= 1000
        [message] = looked.answer["messages"]
        assert texts[0].startswith(message["payload"]) and len(message["payload"]) >= 100
        said = f"payload cut from 3002 to {len(message['payload'])} characters"
        assert said in message["truncated"]
        handled = []
        for _ in range(3):
            fetched = await ask(kit, "fetch_messages", max_wait_ms=0)
            assert len(fetched.content) <= 1000
            [message] = fetched.answer["messages"]
            assert texts[message["msg_id"]].startswith(message["payload"])
            handled.append(message["msg_id"])
            await ask(kit, "ack_messages", msg_id=message["msg_id"])
        assert handled == [0, 1, 2]
        assert (await ask(kit, "fetch_messages", max_wait_ms=0)).answer["count"] == 0
    [whole] = await client.query("agent.me", limit=1)  # cut for the model, whole in the mailbox
    assert whole.payload.decode() == texts[0]


async def test_fetched_messages_that_did_not_fit_are_handed_out_again(client):
    texts = [f"{n}:" + "y" * 1000 for n in range(5)]
    await seed(client, "agent.me", texts)
    options = {"agent_mailbox": "agent.me", "max_answer_chars": 2800}
    async with Mq9Toolkit(client=client, **options) as kit:
        first = await ask(kit, "fetch_messages", max_wait_ms=0)
        shown = ids(first)
        assert shown == list(range(len(shown))) and 2 <= len(shown) < 5  # each its share
        assert len(first.content) <= 2800
        assert all("truncated" in m for m in first.answer["messages"])
        assert [m.msg_id for m in first.artifact] == shown  # code gets what the model saw
        left = 5 - len(shown)
        said = f"{left} more did not fit in this answer: they stay waiting"
        assert said in first.answer["next_step"]
        acked = await ask(kit, "ack_messages", msg_id=shown[-1])
        assert acked.answer == {"confirmed": shown}  # nothing else was waiting for an ack
        # The agent stops here. Whoever reads the group next gets the rest: nothing was lost.
    async with Mq9Toolkit(client=client, **options) as restarted:
        got = []
        while batch := ids(await ask(restarted, "fetch_messages", max_wait_ms=0)):
            got += batch
            await ask(restarted, "ack_messages", msg_id=batch[-1])
        assert got == list(range(len(shown), 5))


async def test_a_released_message_is_handed_out_again_to_the_same_agent(client):
    await seed(client, "agent.me", [f"{n}:" + "z" * 1000 for n in range(3)])
    async with Mq9Toolkit(client=client, agent_mailbox="agent.me", max_answer_chars=1100) as kit:
        assert ids(await ask(kit, "fetch_messages", max_wait_ms=0)) == [0]
        # Not acked yet: the next fetch gives what did not fit, and names what waits for an ack.
        second = await ask(kit, "fetch_messages", max_wait_ms=0)
        assert ids(second) == [1] and second.answer["unacked_earlier"] == [0]
        refused = await ask(kit, "ack_messages", msg_id=2)
        assert refused.status == "error" and "Waiting for an ack: [0, 1]" in refused.content
        assert (await ask(kit, "ack_messages", msg_id=1)).answer == {"confirmed": [0, 1]}
        assert ids(await ask(kit, "fetch_messages", max_wait_ms=0)) == [2]


async def test_a_read_only_look_within_the_budget_takes_nothing(client):
    await seed(client, "agent.me", [f"{n}:" + "v" * 1000 for n in range(3)])
    options = {"agent_mailbox": "agent.me", "read_only": True, "max_answer_chars": 1100}
    async with Mq9Toolkit(client=client, **options) as kit:
        for _ in range(2):  # the same look twice: nothing was handed out or released
            looked = await ask(kit, "fetch_messages", max_wait_ms=0)
            assert ids(looked) == [0]
            said = "2 more did not fit in this answer: query_messages pages through them"
            assert said in looked.answer["next_step"]
    assert len(await client.fetch("agent.me", group_name="default", deliver="earliest",
                                  max_wait_ms=0)) == 3  # fmt: skip


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_a_list_of_agents_gives_every_name_before_any_description(client):
    for n in range(20):
        await client.agent_register(
            {"name": f"agent.peer{n}", "mailbox": f"agent.peer{n}",
             "description": f"Peer {n} translates long reports. " + "Detail. " * 40}
        )  # fmt: skip
    async with Mq9Toolkit(client=client, max_answer_chars=4000) as kit:
        found = await ask(kit, "agent_discover", query="")
        assert found.answer["count"] == 20 == len(found.artifact) == len(found.answer["agents"])
        assert len(found.content) <= 4000
        agents = found.answer["agents"]
        assert all(a["truncated"].startswith("description cut from") for a in agents)
        assert {a["mailbox"] for a in found.answer["agents"]} == {
            f"agent.peer{n}" for n in range(20)
        }
    async with Mq9Toolkit(client=client, max_answer_chars=1000) as kit:  # not even the names
        found = await ask(kit, "agent_discover", query="")
        assert 1 <= found.answer["count"] < 20 and len(found.content) <= 1000
        more = 20 - found.answer["count"]
        assert f"{more} more did not fit in this answer" in found.answer["note"]
        # names first: the descriptions of those shown only share what is left
        assert all(len(a["description"]) < 40 for a in found.answer["agents"])


# -- the same budget over MCP ------------------------------------------------------------------


@pytest.mark.slow
async def test_mq9_mcp_takes_the_budget_as_a_flag_and_pages_the_same(nats_server):
    from testbed.support.mcp_support import ok, served_engine, stdio_session

    texts = [f"{n}:" + "w" * 1000 for n in range(12)]
    async with served_engine(nats_server.url), Mq9Client(nats_server.url) as client:
        await seed(client, "team.inbox", texts)
        flags = ("--server", nats_server.url, "--max-answer-chars", "1000")
        async with stdio_session(*flags) as mcp:
            looked = await ok(mcp, "query_messages", mail_address="team.inbox")
            assert [m["msg_id"] for m in looked["messages"]] == [0]
            newest = "the newest query_messages(mail_address='team.inbox', from_id=2)"
            assert newest in looked["next_step"]
            fetched = await ok(mcp, "fetch_messages", mail_address="team.inbox", max_wait_ms=0)
            assert fetched["count"] == 1 and texts[0].startswith(fetched["messages"][0]["payload"])
            assert "9 more did not fit" in fetched["next_step"]  # of the 10 a fetch takes
            await ok(mcp, "ack_messages", mail_address="team.inbox", msg_id=0)
            again = await ok(mcp, "fetch_messages", mail_address="team.inbox", max_wait_ms=0)
            assert [m["msg_id"] for m in again["messages"]] == [1]


# -- a hostile co-agent against the budget (issue #52) -------------------------------------
# What others write is counted as the model reads it: JSON-escaped, where a control character
# reads as six characters and a quote as two.

BUDGET = 9000  # the default max_answer_chars
HOSTILE = {  # one message within every per-part limit (4,000 characters each, as sent)
    "payload": "\x01" * 4000,
    "key": '"' * 4000,
    "tags": ['"' * 100 + str(n) for n in range(40)],
    "headers": {"mq9-dead-letter": '"' * 4000},  # shown as where a dead letter came from
    "priority": "critical",  # first in every fetch
}


async def test_one_hostile_message_cannot_take_an_answer_over_its_budget(client):
    await client.mailbox_create(name="agent.me")
    await client.send("agent.me", **HOSTILE)
    orders = [f"order {n}" for n in range(5)]
    for order in orders:
        await client.send("agent.me", order)
    async with Mq9Toolkit(client=client, agent_mailbox="agent.me") as kit:
        answers = [
            await ask(kit, "query_messages"),
            await ask(kit, "query_messages", key=HOSTILE["key"]),
            await ask(kit, "query_messages", tags=HOSTILE["tags"][:1]),
            await ask(kit, "fetch_messages", max_wait_ms=0),
        ]
        for answer in answers:
            assert len(answer.content) <= BUDGET  # the ToolMessage as the model reads it
            hostile = answer.answer["messages"][0]
            for part in ("payload", "key", "dead_letter"):
                assert f"{part} cut from 4000 to" in hostile["truncated"]
            assert "tags: " in hostile["truncated"] and "of 40 shown" in hostile["truncated"]
        page, fetched = answers[0], answers[3]
        for answer in (page, fetched):  # the large one hides none of the real ones
            assert [m["payload"] for m in answer.answer["messages"][1:]] == orders
            assert all("truncated" not in m for m in answer.answer["messages"][1:])
        assert ids(fetched) == [0, 1, 2, 3, 4, 5]
        assert (await ask(kit, "ack_messages", msg_id=5)).answer["confirmed"] == ids(fetched)


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_large_cards_cannot_hide_the_real_agents_from_the_listing(client):
    # About 64 KiB each as stored (a control character is six bytes): 17 as in issue #52, 12
    # on nats-server, whose answers carry at most 1 MiB (a larger listing is refused).
    spam = 17 if client.server.startswith("memory://") else 12
    for n in range(spam):
        await client.agent_register(
            {"name": f"spam.agent{n}", "mailbox": f"spam.agent{n}", "description": "\x02" * 10800}
        )
    real = {"billing.agent": "Bills customers.", "translator.agent": "Translates documents."}
    for name, description in real.items():
        await client.agent_register({"name": name, "mailbox": name, "description": description})
    async with Mq9Toolkit(client=client) as kit:
        found = await ask(kit, "agent_discover", query="")
        assert found.status == "success" and len(found.content) <= BUDGET, found.content
        agents = {a["name"]: a for a in found.answer["agents"]}
        assert len(agents) == found.answer["count"] == spam + 2  # every one, by name and mailbox
        for name, description in real.items():  # the real ones whole
            assert agents[name] == {"name": name, "mailbox": name, "description": description}
        assert all(agents[f"spam.agent{n}"]["mailbox"] == f"spam.agent{n}" for n in range(spam))
        assert "more did not fit" not in found.answer["note"]
        # A card shown in agent_register's answer is held to the same budget.
        await client.agent_register(
            {"name": "spam.big", "mailbox": "spam.big", "description": "\x02" * 4000,
             "skills": [{"id": "s", "name": '"' * 3000, "description": "\x03" * 1000}]}
        )  # fmt: skip
        options = {"agent_mailbox": "spam.big", "max_payload_chars": 8000}
        async with Mq9Toolkit(client=client, **options) as squatter:
            refused = await ask(squatter, "agent_register", capabilities="c" * 3000)
            assert refused.answer["registered"] is False and len(refused.content) <= BUDGET
            assert "cut from" in refused.answer["truncated"]


def test_an_agents_words_in_a_call_answer_are_held_to_the_budget():
    from mq9_platform.operations.results import CallsListed, CallStatus, Outcome

    said = {"result": "\x01" * 4000, "question": '"' * 4000, "reason": "\x02" * 4000}
    task = {"task_id": "t" * 32, "agent": "agent.far", "state": "completed", "context_id": "c"}
    status = Outcome(CallStatus(**task, **said, note="data"), None)
    status.fit(BUDGET, 4000)
    assert len(status.text()) <= BUDGET and status.content["task_id"] == "t" * 32
    assert "result cut from 4000 to" in status.content["truncated"]
    calls = [{**task, "task_id": f"{n:032d}", **said} for n in range(30)]
    listed = Outcome(CallsListed(count=30, calls=calls), calls)
    listed.fit(BUDGET, 4000)
    assert len(listed.text()) <= BUDGET
    shown = listed.content["calls"]
    assert [c["task_id"] for c in shown] == [f"{n:032d}" for n in range(len(shown))]
    assert len(shown) == listed.content["count"] == 30  # every call, each its share
    assert "check_call" in listed.content["note"]


def test_a_cut_text_is_the_longest_head_that_reads_within_its_share():
    import random

    from mq9_platform.operations.views import head, read_length

    chances = random.Random(52)
    alphabet = ["a", "\x01", '"', "\\", "\n", "é", "\ud800", "😀"]  # read as 1, 6, 2, 2, 2, 1..
    for _ in range(2000):
        text = "".join(chances.choice(alphabet) for _ in range(chances.randint(0, 60)))
        chars = chances.randint(0, 80)
        shown = head(text, chars)
        assert text.startswith(shown) and read_length(shown) <= chars
        assert shown == text or read_length(text[: len(shown) + 1]) > chars  # the longest
