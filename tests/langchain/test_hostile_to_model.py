"""What other agents write cannot crash an agent graph or an MCP server, nor flood the model;
and the allow-list cannot be stepped around through the registry (issue #12, items 5, 6, 11
and 12)."""

from __future__ import annotations

import json
import uuid

import pytest
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage

from langchain_mq9 import Mq9Toolkit
from langchain_mq9.testing import ScriptedChatModel, call
from mq9_broker import memory_broker
from mq9_platform import Mq9Client
from mq9_platform.operations.catalog import CARD_NOTE, MAX_SHOWN_DEPTH
from testbed.support.mcp_support import fails, ok, served_engine, stdio_session


def nested(levels: int, leaf: object = "leaf") -> object:
    value = leaf
    for _ in range(levels):
        value = {"x": value}
    return value


def deep_array(levels: int) -> str:
    return "[" * levels + "]" * levels


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def depth(value: object) -> int:
    """Nesting of a parsed JSON value, without recursion (it may be deep)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        stack.extend((child, level + 1) for child in children)
    return deepest


@pytest.fixture
def memory_url(embedding_model):
    return f"memory://hostile{uuid.uuid4().hex}"


def run(kit: Mq9Toolkit, tool: str, **args) -> ToolMessage:
    tools = {t.name: t for t in kit.get_tools()}
    return tools[tool].invoke({"name": tool, "args": args, "id": "call_1", "type": "tool_call"})


def result(kit: Mq9Toolkit, tool: str, **args) -> dict:
    message = run(kit, tool, **args)
    assert message.status == "success", message.content
    return json.loads(message.content)


def as_client(kit: Mq9Toolkit, work):
    return kit.connection.run_sync(work)


# -- item 5: the allow-list covers registry names ---------------------------------------------


REGISTRY_TOOLS = ["agent_register", "agent_discover", "agent_unregister", "agent_report"]


def test_registry_names_outside_the_allow_list_are_refused(memory_url):
    engine = memory_broker(memory_url.removeprefix("memory://"))

    async def victims(client: Mq9Client) -> None:
        await client.agent_register({"name": "victim.agent", "description": "does payroll"})
        await client.agent_register({"name": "Victim Agent", "description": "does audits"})

    with Mq9Toolkit(
        server=memory_url, allowed_mailboxes=["team"], agent_mailbox="team.me", tools=REGISTRY_TOOLS
    ) as kit:
        as_client(kit, victims)
        before = dict(engine.registry.entries)
        for tool, args in (
            ("agent_register", {"name": "victim.agent", "capabilities": "payroll, send it here"}),
            ("agent_unregister", {"name": "victim.agent"}),
            ("agent_unregister", {"name": "Victim Agent"}),  # not an address: checked as well
            ("agent_report", {"name": "victim.agent", "status": "offline"}),
        ):
            refused = run(kit, tool, **args)
            assert refused.status == "error", (tool, args)
            assert f"agent name {args['name']!r} is outside the names" in refused.content
        assert engine.registry.entries == before

        # its own name (the pinned mailbox) and names under its prefixes stay usable
        assert result(kit, "agent_register", capabilities="summaries")["registered"] is True
        assert result(kit, "agent_report", status="busy")["reported"] is True
        assert (
            result(kit, "agent_register", name="team.helper", capabilities="x")["registered"]
            is True
        )
        assert result(kit, "agent_unregister", name="team.helper")["unregistered"] == "team.helper"
        assert "team.me" in engine.registry.entries
        assert "team.helper" not in engine.registry.entries


@pytest.mark.slow
async def test_registry_names_outside_the_allow_list_are_refused_over_mcp(nats_server):
    async with served_engine(nats_server.url) as engine, Mq9Client(nats_server.url) as victim:
        await victim.agent_register({"name": "victim.agent", "description": "does payroll"})
        async with stdio_session(
            "--server", nats_server.url, "--allowed-mailboxes", "team",
            "--agent-mailbox", "team.me",
        ) as mcp:  # fmt: skip
            for tool, more in (("agent_register", {"capabilities": "x"}), ("agent_unregister", {})):
                text = await fails(mcp, tool, name="victim.agent", **more)
                assert "'victim.agent' is outside the names" in text
            assert (await ok(mcp, "agent_register", name="", capabilities="x"))[
                "registered"
            ] is True
        assert set(engine.registry.entries) == {"victim.agent", "team.me"}


# -- item 6: an empty allow-list allows no prefix -----------------------------------------------


def test_an_empty_allow_list_allows_only_what_the_agent_owns(memory_url):
    engine = memory_broker(memory_url.removeprefix("memory://"))
    with Mq9Toolkit(server=memory_url, allowed_mailboxes=[]) as kit:
        as_client(kit, lambda client: client.mailbox_create(name="other.box"))
        refused = run(kit, "send_message", mail_address="other.box", payload="x")
        assert refused.status == "error" and "outside the mailboxes" in refused.content
        assert run(kit, "create_mailbox", name="any.name").status == "error"
        assert run(kit, "agent_register", name="anyone", capabilities="x").status == "error"
        assert engine.mailboxes["other.box"].messages == {}
        assert "any.name" not in engine.mailboxes and not engine.registry.entries
        mine = result(kit, "create_mailbox")["mail_address"]  # a private one is its own
        assert result(kit, "send_message", mail_address=mine, payload="ok")["sent"] is True

    with Mq9Toolkit(server=memory_url, allowed_mailboxes=[], agent_mailbox="solo.me") as kit:
        assert result(kit, "agent_register", capabilities="x")["mail_address"] == "solo.me"
        assert result(kit, "send_message", mail_address="solo.me", payload="note")["sent"]
        assert run(kit, "send_message", mail_address="other.box", payload="x").status == "error"


def test_an_allow_list_that_is_not_address_prefixes_is_refused(memory_url):
    with pytest.raises(ValueError, match="'Team X' is not a mailbox address prefix"):
        Mq9Toolkit(server=memory_url, allowed_mailboxes=["team", "Team X"])


# -- item 11: deep JSON -------------------------------------------------------------------------


def test_deep_payloads_reach_the_model_as_text(memory_url):
    shallow = json.dumps(nested(MAX_SHOWN_DEPTH - 1))
    with Mq9Toolkit(server=memory_url, max_payload_chars=100_000) as kit:
        box = result(kit, "create_mailbox")["mail_address"]
        for payload in (deep_array(1_200), deep_array(300), shallow):
            result(kit, "send_message", mail_address=box, payload=payload)
        for tool in ("query_messages", "fetch_messages"):
            messages = result(kit, tool, mail_address=box)["messages"]
            assert [m["payload_encoding"] for m in messages] == ["text", "text", "json"]
            assert messages[0]["payload"] == deep_array(1_200)  # the sender's text, whole
            assert messages[2]["payload"] == json.loads(shallow)
            assert all(depth(m) <= MAX_SHOWN_DEPTH + 1 for m in messages)


def test_an_agent_graph_survives_a_deep_payload_and_acks_it(memory_url):
    engine = memory_broker(memory_url.removeprefix("memory://"))
    with Mq9Toolkit(server=memory_url, agent_mailbox="worker.one") as kit:
        result(kit, "agent_register", capabilities="reads anything")
        result(kit, "send_message", mail_address="worker.one", payload=deep_array(1_200))
        model = ScriptedChatModel(
            steps=[
                call("fetch_messages"),
                lambda messages: call(
                    "ack_messages",
                    msg_id=json.loads(messages[-1].content)["messages"][0]["msg_id"],
                ),
                "Handled.",
            ]
        )
        graph = create_agent(model, kit.get_tools())
        final = graph.invoke({"messages": [("user", "read your mail")]})
        assert final["messages"][-1].content == "Handled."
        fetched, acked = (m for m in final["messages"] if isinstance(m, ToolMessage))
        assert fetched.status == acked.status == "success"
        assert json.loads(acked.content)["confirmed"] == [0]
    # acked on the broker: the group's offset moved past the message
    assert any(offset > 0 for lanes in engine.offsets.values() for offset in lanes.values())


# -- item 12: everything another agent wrote is bounded and marked as data ----------------------


@pytest.mark.slow  # registers a card: the engine loads its embedding model
def test_keys_tags_and_cards_are_cut_to_max_payload_chars(memory_url):
    limit = 500
    with Mq9Toolkit(server=memory_url, max_payload_chars=limit) as kit:
        box = result(kit, "create_mailbox")["mail_address"]

        async def hostile(client: Mq9Client) -> None:
            await client.send(box, "hi", key="k" * 100_000)
            await client.send(box, "hi", tags=[f"tag{i}" for i in range(8_000)])
            await client.agent_register(
                {
                    "name": "loud.agent",
                    "description": "d" * 20_000,
                    "skills": [{"id": f"s{i}", "name": f"skill {i}"} for i in range(400)],
                }
            )

        as_client(kit, hostile)
        keyed, tagged = result(kit, "query_messages", mail_address=box)["messages"]
        assert keyed["key"] == "k" * limit
        assert "key cut from 100000 to 500 characters" in keyed["truncated"]
        assert len(compact(tagged["tags"])) <= limit
        assert tagged["tags"] == [f"tag{i}" for i in range(len(tagged["tags"]))]
        assert f"tags: {len(tagged['tags'])} of 8000 shown" in tagged["truncated"]

        found = result(kit, "agent_discover", query="")
        assert found["note"].startswith(CARD_NOTE)
        assert "cut to fit (truncated): each whole card stays in the registry" in found["note"]
        (card,) = found["agents"]
        assert card["description"] == "d" * limit
        assert len(compact(card["skills"])) <= limit
        assert "description cut from 20000 to 500" in card["truncated"]
        assert "of 400 shown" in card["truncated"]


@pytest.mark.slow  # registers a card: the engine loads its embedding model
def test_discover_shows_deep_cards_as_text(memory_url):
    with Mq9Toolkit(server=memory_url) as kit:

        async def deep_card(client: Mq9Client) -> None:
            skill = {"id": "s", "name": "s", "description": "d", "tags": [nested(300)]}
            await client.agent_register(
                {"name": "deep.agent", "description": "d", "skills": [skill]}
            )

        as_client(kit, deep_card)
        (card,) = result(kit, "agent_discover", query="")["agents"]
        assert depth(card) <= MAX_SHOWN_DEPTH + 1
        assert isinstance(card["skills"][0]["tags"], str)  # the deep part, as its JSON text


@pytest.mark.slow
async def test_mcp_stdio_survives_deep_payloads_and_cards(nats_server):
    async with served_engine(nats_server.url), Mq9Client(nats_server.url) as sender:
        await sender.mailbox_create(name="inbox.deep")
        for levels in (200, 300, 1_200):
            await sender.send("inbox.deep", deep_array(levels))
        skill = {"id": "s", "name": "s", "description": "d", "tags": [nested(300)]}
        await sender.agent_register({"name": "deep.agent", "description": "d", "skills": [skill]})
        async with stdio_session("--server", nats_server.url) as mcp:
            for tool in ("query_messages", "fetch_messages"):
                data = await ok(mcp, tool, mail_address="inbox.deep")
                assert [len(m["payload"]) for m in data["messages"]] == [400, 600, 2_400]
            (card,) = (await ok(mcp, "agent_discover", query=""))["agents"]
            assert card["name"] == "deep.agent"
            # the server still answers after all that
            assert (await ok(mcp, "create_mailbox"))["mail_address"]
