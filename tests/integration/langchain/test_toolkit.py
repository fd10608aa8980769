"""Mq9Toolkit: tool selection, safety options, what the model sees, errors, calling contexts."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
import uuid
from types import SimpleNamespace

import nats
import pytest
from langchain_core.messages import ToolMessage

from langchain_mq9 import Mq9Toolkit
from mq9_broker import BrokerEngine, memory_broker, serve_on_nats
from mq9_platform import Mq9Client, OperationError, Priority, ToolPolicy
from mq9_platform.operations.catalog import OPERATIONS, message_view
from testbed.nats_server import start_nats_server
from testbed.ports import silent_port

EIGHT = [
    "agent_register",
    "agent_discover",
    "create_mailbox",
    "send_message",
    "fetch_messages",
    "ack_messages",
    "query_messages",
    "delete_message",
]


def tool_call(tool, **args) -> ToolMessage:
    return tool.invoke({"name": tool.name, "args": args, "id": "call_1", "type": "tool_call"})


async def atool_call(tool, **args) -> ToolMessage:
    return await tool.ainvoke(
        {"name": tool.name, "args": args, "id": "call_1", "type": "tool_call"}
    )


@pytest.fixture
def memory_url():
    return f"memory://toolkit{uuid.uuid4().hex}"


@pytest.fixture
def toolkit(memory_url):
    with Mq9Toolkit(server=memory_url) as kit:
        yield kit


def tools_of(kit: Mq9Toolkit) -> dict:
    return {tool.name: tool for tool in kit.get_tools()}


# -- selection ---------------------------------------------------------------------------------


def test_get_tools_returns_the_eight_in_order(toolkit):
    assert [t.name for t in toolkit.get_tools()] == EIGHT


def test_tools_pick_by_name_including_the_optional_ones(memory_url):
    kit = Mq9Toolkit(server=memory_url, tools=["send_message", "agent_report", "agent_unregister"])
    assert [t.name for t in kit.get_tools()] == ["send_message", "agent_report", "agent_unregister"]


def test_the_call_tools_are_opt_in(memory_url):
    assert "call_agent" not in [t.name for t in Mq9Toolkit(server=memory_url).get_tools()]
    names = [t.name for t in Mq9Toolkit(server=memory_url, calls=True).get_tools()]
    assert names == [*EIGHT, "call_agent", "check_call", "answer_call", "cancel_call", "list_calls"]
    picked = Mq9Toolkit(server=memory_url, tools=["call_agent", "check_call"]).get_tools()
    assert [t.name for t in picked] == ["call_agent", "check_call"]


def test_unknown_tool_name_is_refused(memory_url):
    with pytest.raises(ValueError, match="unknown mq9 tool 'send'"):
        Mq9Toolkit(server=memory_url, tools=["send"])


def test_a_server_is_required_unless_the_environment_names_one(monkeypatch, memory_url):
    monkeypatch.delenv("MQ9_SERVER", raising=False)
    monkeypatch.delenv("NATS_URL", raising=False)
    with pytest.raises(ValueError, match="needs server="):
        Mq9Toolkit()
    monkeypatch.setenv("NATS_URL", "nats://elsewhere:4222")
    monkeypatch.setenv("MQ9_SERVER", memory_url)
    assert Mq9Toolkit().server == memory_url


def test_tool_arguments_are_few_and_use_the_protocol_vocabulary():
    kit = Mq9Toolkit(server="memory://", tools=list(OPERATIONS))
    fields = {t.name: set(t.args) for t in kit.get_tools()}
    assert fields == {
        "agent_register": {"name", "capabilities"},
        "agent_discover": {"query"},
        "create_mailbox": {"name", "ttl"},
        "send_message": {
            *("mail_address", "payload", "priority", "key", "tags", "delay", "ttl"),
            "idempotency_key",  # #90: stored once per key (a tool call's own by default)
        },
        "fetch_messages": {"mail_address", "max_wait_ms"},
        "ack_messages": {"mail_address", "msg_id", "set_aside"},
        "query_messages": {"mail_address", "key", "tags", "from_id", "limit"},
        "delete_message": {"mail_address", "msg_id"},
        "agent_unregister": {"name"},
        "agent_report": {"name", "status", "details"},
        "call_agent": {"agent", "task", "wait_seconds", "context_id", "idempotency_key"},
        "check_call": {"task_id", "wait_seconds"},
        "answer_call": {"task_id", "answer", "wait_seconds", "idempotency_key"},
        "cancel_call": {"task_id"},
        "list_calls": {"state"},
        # an extra (in_default_set=False): one rule of several target kinds (docs/wake.md)
        "wake_rule": {
            *("action", "mail_address", "name", "target", "url", "secret", "assistant"),
            *("argv", "callback", "group", "min_interval", "cap", "quiet_hours"),
        },
    }
    # What the model sees is the catalog's schema; the pydantic model validates each call.
    for tool in kit.get_tools():
        assert tool.args_schema == OPERATIONS[tool.name].input_schema(kit.policy)
        assert tool.get_input_schema() is OPERATIONS[tool.name].input_model
        assert set(tool.get_input_schema().model_fields) == set(tool.args)


def test_the_own_mailbox_is_a_default_the_descriptions_name(memory_url):
    plain = {t.name: t for t in Mq9Toolkit(server=memory_url).get_tools()}
    mine = {t.name: t for t in Mq9Toolkit(server=memory_url, agent_mailbox="agent.me").get_tools()}
    for name in ("fetch_messages", "ack_messages", "query_messages", "delete_message"):
        assert "mail_address" in plain[name].args_schema["required"]
        assert "mail_address" not in mine[name].args_schema.get("required", ())
        assert "'agent.me'" in mine[name].args["mail_address"]["description"]
    assert "reply_to: 'agent.me' in a JSON payload" in mine["send_message"].description
    assert "agent.me" not in plain["send_message"].description
    assert "name" not in mine["agent_register"].args_schema["required"]
    with pytest.raises(ValueError, match="agent_mailbox 'Agent Me' is not a mailbox address"):
        Mq9Toolkit(server=memory_url, agent_mailbox="Agent Me")


def test_pinned_knobs_are_toolkit_options_not_arguments(memory_url):
    kit = Mq9Toolkit(
        server=memory_url,
        default_group="g",
        deliver="latest",
        num_msgs=3,
        discover_by="text",
        discover_limit=5,
        agent_card={"version": "2.0.0"},
    )
    policy = kit.policy
    assert (policy.default_group, policy.deliver, policy.num_msgs) == ("g", "latest", 3)
    assert (policy.discover_by, policy.discover_limit) == ("text", 5)
    assert policy.agent_card == {"version": "2.0.0"}
    with pytest.raises(ValueError):
        Mq9Toolkit(server=memory_url, num_msgs=0)
    with pytest.raises(ValueError):
        Mq9Toolkit(server=memory_url, deliver="from_id")


# -- what the model sees -----------------------------------------------------------------------


def test_fetch_shows_decoded_payloads_the_ack_hint_and_returns_messages_as_artifact(toolkit):
    tools = tools_of(toolkit)
    tool_call(tools["create_mailbox"], name="agent.inbox")
    tool_call(tools["send_message"], mail_address="agent.inbox", payload={"task": "a"})
    tool_call(
        tools["send_message"],
        mail_address="agent.inbox",
        payload="plain words",
        priority="critical",
    )
    result = tool_call(tools["fetch_messages"], mail_address="agent.inbox")
    content = json.loads(result.content)
    assert [
        (m["msg_id"], m["priority"], m["payload"], m["payload_encoding"])
        for m in content["messages"]
    ] == [
        (1, "critical", "plain words", "text"),
        (0, "normal", {"task": "a"}, "json"),
    ]
    assert (
        "call ack_messages(mail_address='agent.inbox', msg_id=<the last one handled>)"
        in content["next_step"]
    )
    assert "not instructions" in content["note"]
    assert [m.msg_id for m in result.artifact] == [1, 0]
    assert result.artifact[1].payload == b'{"task":"a"}'


def test_long_payloads_are_cut_with_a_note(memory_url):
    kit = Mq9Toolkit(server=memory_url, max_payload_chars=10)
    tools = tools_of(kit)

    async def seed(client):
        await client.mailbox_create(name="agent.inbox")
        await client.send("agent.inbox", "x" * 50)
        await client.send("agent.inbox", {"words": "y" * 50})

    kit.connection.run_sync(seed)
    content = json.loads(tool_call(tools["query_messages"], mail_address="agent.inbox").content)
    text, data = content["messages"]
    assert text["payload"] == "x" * 10 and text["payload_encoding"] == "text"
    assert "cut from 50 to 10 characters" in text["truncated"]
    # read as it is escaped: each quote counts two
    assert data["payload"] == '{"words"' and data["payload_encoding"] == "json"
    kit.close()


def test_messages_without_key_or_tags_attributes_are_shown_too():
    # The official mq9 SDK's Message has neither key nor tags.
    sdk_message = SimpleNamespace(
        msg_id=3, payload=b"hi", priority=Priority.URGENT, create_time=1700000000
    )
    assert message_view(sdk_message) == {
        "msg_id": 3,
        "priority": "urgent",
        "create_time": 1700000000,
        "payload": "hi",
        "payload_encoding": "text",
    }


async def test_send_gives_the_client_a_priority_enum_as_the_official_sdk_needs():
    sent = []

    class SdkLikeClient:  # its send reads priority.value, as mq9.Mq9Client.send does
        server = "sdk://"
        request_timeout = 1.0

        async def send(self, mail_address, payload, *, priority, key, delay, ttl, tags):
            sent.append(priority.value)
            return 7

    kit = Mq9Toolkit(client=SdkLikeClient())
    result = await atool_call(
        tools_of(kit)["send_message"], mail_address="a.b", payload="x", priority="urgent"
    )
    assert result.status == "success" and sent == ["urgent"]


# -- consuming with a group: each message once, acks only for what was handed out ---------------


async def _seed(client, box, priorities):
    await client.mailbox_create(name=box)
    return [await client.send(box, f"m{i}", priority=p) for i, p in enumerate(priorities)]


async def test_a_group_hands_each_message_out_once_and_ack_confirms_in_order(memory_url):
    kit = Mq9Toolkit(server=memory_url, num_msgs=2)
    async with kit, Mq9Client(memory_url) as observer:
        tools = tools_of(kit)
        await _seed(observer, "work.q", ["normal", "normal", "critical", "normal"])

        async def fetch(**args):
            return json.loads(
                (await atool_call(tools["fetch_messages"], mail_address="work.q", **args)).content
            )

        first = await fetch(max_wait_ms=0)
        assert [m["msg_id"] for m in first["messages"]] == [2, 0]
        second = await fetch(max_wait_ms=0)  # nothing acked: still never twice
        assert [m["msg_id"] for m in second["messages"]] == [1, 3]
        assert second["unacked_earlier"] == [2, 0]
        assert (await fetch(max_wait_ms=0))["count"] == 0

        # Acking 0 confirms what was handed out up to it (2 then 0), not the messages after it.
        acked = await atool_call(tools["ack_messages"], mail_address="work.q", msg_id=0)
        content = json.loads(acked.content)
        assert content["confirmed"] == [2, 0] and content["still_unacked"] == [1, 3]
        # The broker's position moved only past what is safe: 0 (1 is not handled yet).
        assert [m.msg_id for m in await observer.fetch(
            "work.q", group_name="default", max_wait_ms=0)] == [2, 1, 3]  # fmt: skip

        acked = await atool_call(tools["ack_messages"], mail_address="work.q", msg_id=3)
        assert json.loads(acked.content)["confirmed"] == [1, 3]
        assert await observer.fetch("work.q", group_name="default", max_wait_ms=0) == []


async def test_ack_refuses_ids_that_fetch_messages_did_not_hand_out(memory_url):
    async with (
        Mq9Toolkit(server=memory_url, num_msgs=1) as kit,
        Mq9Toolkit(server=memory_url, worker="other") as other,
        Mq9Client(memory_url) as observer,
    ):
        tools = tools_of(kit)
        await _seed(observer, "work.q", ["normal", "normal"])
        refused = await atool_call(tools["ack_messages"], mail_address="work.q", msg_id=1)
        assert refused.status == "error"
        # It says what to fetch first.
        assert "Call fetch_messages(mail_address='work.q') first" in refused.content
        await atool_call(tools["fetch_messages"], mail_address="work.q")
        for made_up in (1, 99):
            refused = await atool_call(tools["ack_messages"], mail_address="work.q", msg_id=made_up)
            assert (
                refused.status == "error" and f"msg_id {made_up} is not waiting" in refused.content
            )
            assert "Waiting for an ack: [0]" in refused.content
        # another worker's fetches do not count for this one, even in the same group (the
        # group's one reader, restarted in another process, may: docs/groups.md)
        refused = await atool_call(tools_of(other)["ack_messages"], mail_address="work.q", msg_id=0)
        assert refused.status == "error"
        assert (
            await atool_call(tools["ack_messages"], mail_address="work.q", msg_id=0)
        ).status == ("success")
        again = await atool_call(tools["ack_messages"], mail_address="work.q", msg_id=0)
        assert again.status == "error" and "already acked" in again.content
        # Nothing was acked on the broker beyond what was handed out and confirmed.
        assert [m.msg_id for m in await observer.fetch(
            "work.q", group_name="default", max_wait_ms=0)] == [1]  # fmt: skip


async def test_two_toolkits_in_one_group_are_competing_workers(memory_url):
    async with (
        Mq9Toolkit(server=memory_url, num_msgs=1, worker="one") as one,
        Mq9Toolkit(server=memory_url, num_msgs=1, worker="two") as two,
        Mq9Client(memory_url) as observer,
    ):
        await _seed(observer, "work.q", ["normal"] * 5 + ["urgent"])
        got: dict[str, list[int]] = {"one": [], "two": []}
        for _ in range(3):
            for name, kit in (("one", one), ("two", two)):
                result = await atool_call(tools_of(kit)["fetch_messages"], mail_address="work.q")
                got[name] += [m.msg_id for m in result.artifact]
        assert sorted(got["one"] + got["two"]) == [0, 1, 2, 3, 4, 5]  # none twice, none lost
        assert got["one"] and got["two"]
        for name, kit in (("one", one), ("two", two)):
            acked = await atool_call(
                tools_of(kit)["ack_messages"], mail_address="work.q", msg_id=got[name][-1]
            )
            assert json.loads(acked.content)["confirmed"] == got[name]
        assert await observer.fetch("work.q", group_name="default", max_wait_ms=0) == []


async def test_a_restarted_toolkit_with_its_worker_name_takes_back_what_it_held(memory_url):
    async with Mq9Client(memory_url) as observer:
        await _seed(observer, "work.q", ["normal", "normal"])
        async with Mq9Toolkit(server=memory_url, worker="agent-1") as crashed:
            fetched = await atool_call(tools_of(crashed)["fetch_messages"], mail_address="work.q")
            assert [m.msg_id for m in fetched.artifact] == [0, 1]  # and never acked
        async with Mq9Toolkit(server=memory_url, worker="agent-1") as restarted:
            tools = tools_of(restarted)
            again = await atool_call(tools["fetch_messages"], mail_address="work.q")
            assert [m.msg_id for m in again.artifact] == [0, 1]
            await atool_call(tools["ack_messages"], mail_address="work.q", msg_id=1)
        assert await observer.fetch("work.q", group_name="default", max_wait_ms=0) == []


async def test_a_group_starting_at_latest_misses_nothing_sent_after_its_first_fetch(memory_url):
    async with (
        Mq9Toolkit(server=memory_url, deliver="latest") as kit,
        Mq9Client(memory_url) as observer,
    ):
        fetch = tools_of(kit)["fetch_messages"]
        await _seed(observer, "work.q", ["normal", "normal", "normal"])
        first = await atool_call(fetch, mail_address="work.q", max_wait_ms=0)
        assert [m.msg_id for m in first.artifact] == [2]  # RobustMQ's latest: the newest one
        for text in ("a", "b"):
            await observer.send("work.q", text)
        later = await atool_call(fetch, mail_address="work.q", max_wait_ms=0)
        assert [m.msg_id for m in later.artifact] == [3, 4]


async def test_query_pages_past_a_hundred_from_an_id_and_consumes_nothing(memory_url):
    async with (
        Mq9Toolkit(server=memory_url, max_answer_chars=50_000) as kit,
        Mq9Client(memory_url) as observer,
    ):
        query = tools_of(kit)["query_messages"]
        await _seed(observer, "work.q", ["normal"] * 103 + ["urgent"])
        page = json.loads((await atool_call(query, mail_address="work.q", limit=100)).content)
        assert page["count"] == 100 and page["messages"][0]["msg_id"] == 0
        assert "query_messages(mail_address='work.q', from_id=100, limit=100)" in page["next_step"]
        for _ in range(2):  # a look from a position, twice the same: nothing was consumed
            rest = await atool_call(query, mail_address="work.q", from_id=100, limit=100)
            assert [m.msg_id for m in rest.artifact] == [100, 101, 102, 103]
            assert "More follow" not in json.loads(rest.content)["next_step"]
        refused = await atool_call(query, mail_address="work.q", from_id=100, key="k")
        assert refused.status == "error" and "from_id reads every message" in refused.content
        assert await observer.fetch("work.q", group_name="default", max_wait_ms=0) != []


def test_query_states_which_single_filter_applied(toolkit):
    tools = tools_of(toolkit)
    tool_call(tools["create_mailbox"], name="agent.inbox")
    tool_call(tools["send_message"], mail_address="agent.inbox", payload="a", tags=["x"])
    tool_call(tools["send_message"], mail_address="agent.inbox", payload="b", tags=["y"])
    tool_call(tools["send_message"], mail_address="agent.inbox", payload="c", key="k")
    any_tag = json.loads(
        tool_call(tools["query_messages"], mail_address="agent.inbox", tags=["x", "y"]).content
    )
    assert [m["payload"] for m in any_tag["messages"]] == ["a", "b"]
    both = json.loads(
        tool_call(tools["query_messages"], mail_address="agent.inbox", key="k", tags=["x"]).content
    )
    assert [m["payload"] for m in both["messages"]] == ["c"]
    assert both["filter_used"].startswith("only key")
    # The neutral values a strict-mode model must give mean "no filter".
    everything = json.loads(
        tool_call(
            tools["query_messages"], mail_address="agent.inbox", key="", tags=[], from_id=0
        ).content
    )
    assert [m["payload"] for m in everything["messages"]] == ["a", "b", "c"]


def test_neutral_values_of_a_strict_mode_call_change_nothing(toolkit, memory_url):
    tools = tools_of(toolkit)
    tool_call(tools["create_mailbox"], name="agent.inbox")
    strict = tool_call(
        tools["send_message"], mail_address="agent.inbox", payload="x", priority="normal",
        key="", tags=[], delay=0, ttl=0,
    )  # fmt: skip
    assert json.loads(strict.content) == {"sent": True, "msg_id": 0}  # not delayed (-1)
    [stored] = (
        memory_broker(memory_url.removeprefix("memory://"))
        .mailboxes["agent.inbox"]
        .messages.values()
    )
    assert (stored.key, stored.tags, stored.expire_at, stored.header) == (None, (), 0, None)
    private = json.loads(tool_call(tools["create_mailbox"], name="", ttl=0).content)
    assert private["mail_address"] != ""


# -- errors reach the model as tool messages ---------------------------------------------------


def test_unknown_priority_is_an_error_message_and_nothing_is_sent(toolkit, memory_url):
    tools = tools_of(toolkit)
    tool_call(tools["create_mailbox"], name="agent.inbox")
    result = tool_call(
        tools["send_message"], mail_address="agent.inbox", payload="x", priority="high"
    )
    assert result.status == "error"
    assert "priority" in result.content and "'urgent'" in result.content
    assert (
        memory_broker(memory_url.removeprefix("memory://")).mailboxes["agent.inbox"].messages == {}
    )


FIND_IT = (
    "no agent reads this address. Find the recipient's mailbox with agent_discover, or ask "
    "the user; do not create it"
)


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        # A recipient that is not there: find it (or ask), never create it.
        (
            "send_message",
            {"mail_address": "nobody.home", "payload": "x"},
            "mailbox 'nobody.home' does not exist (it was never created, or its TTL ran "
            f"out) — {FIND_IT}",
        ),
        (
            "send_message",
            {"mail_address": "Bad-Address", "payload": "x"},
            "invalid mail_address: 'Bad-Address' (lowercase letters, digits and dots, starting "
            f"and ending with a letter or digit) — {FIND_IT}",
        ),
        (
            "fetch_messages",
            {"mail_address": "nobody.home"},
            "mailbox 'nobody.home' does not exist (it was never created, or its TTL ran out) — "
            "check the address: "
            "agent_discover shows each agent's mailbox",
        ),
        (
            "query_messages",
            {"mail_address": "nobody.home"},
            "does not exist (it was never created, or its TTL ran out) — check the address",
        ),
        (
            "create_mailbox",
            {"name": "agent.inbox"},
            "mailbox agent.inbox already exists — it is there already: use it as it is, or call "
            "create_mailbox with another name",
        ),
        (
            "create_mailbox",
            {"name": "Team Inbox"},
            "— use lowercase letters, digits and dots, e.g. 'team.reports'",
        ),
        ("fetch_messages", {}, "Invalid arguments: mail_address: Field required"),
        (
            "fetch_messages",
            {"mail_address": "agent.inbox", "max_wait_ms": 999_999},
            "Invalid arguments: max_wait_ms: Input should be less than or equal to 120000",
        ),
        (
            "ack_messages",
            {"mail_address": "agent.inbox", "msg_id": -1},
            "Invalid arguments: msg_id",
        ),
        ("agent_discover", {"query": ["many"]}, "Invalid arguments: query"),
        ("agent_register", {"name": "agent.x"}, "Invalid arguments: capabilities: Field required"),
    ],
)
def test_errors_say_what_to_do(toolkit, tool, args, expected):
    tools = tools_of(toolkit)
    tool_call(tools["create_mailbox"], name="agent.inbox")
    result = tool_call(tools[tool], **args)
    assert result.status == "error"
    assert expected in result.content


def test_errors_about_the_agents_own_mailbox_lead_to_agent_register(memory_url):
    kit = Mq9Toolkit(server=memory_url, agent_mailbox="agent.me", tools=list(OPERATIONS))
    tools = tools_of(kit)
    for name, args in (("fetch_messages", {}), ("query_messages", {})):
        result = tool_call(tools[name], **args)
        assert result.status == "error"
        assert "this is your own mailbox and it does not exist yet: call agent_register first" in (
            result.content
        )
    other = tool_call(tools["query_messages"], mail_address="nobody.home")
    assert "check the address (yours is 'agent.me')" in other.content
    bad = tool_call(tools["agent_report"], status="busy", details="[1, 2]")
    assert bad.status == "error" and "details must be a JSON object" in bad.content
    kit.close()


def test_a_pinned_agent_card_that_is_not_a2a_is_a_tool_error(memory_url):
    kit = Mq9Toolkit(server=memory_url, agent_card={"skills": [7]})
    result = tool_call(tools_of(kit)["agent_register"], name="agent.x", capabilities="works")
    assert result.status == "error"
    assert "invalid agent_card: a skill is a non-empty string or a dict" in result.content
    kit.close()


@pytest.mark.slow
async def test_a_broker_that_is_down_is_a_tool_error_not_a_crash():
    kit = Mq9Toolkit(server=f"nats://127.0.0.1:{silent_port()}", request_timeout=1)
    tools = tools_of(kit)
    result = await asyncio.wait_for(atool_call(tools["agent_discover"]), 10)
    assert result.status == "error"
    assert "cannot connect to the mq9 broker" in result.content
    assert "try again shortly" in result.content
    sync_result = await asyncio.to_thread(tool_call, tools["agent_discover"])
    assert sync_result.status == "error"
    await kit.aclose()


def test_programming_errors_still_raise():
    class Broken:
        server = "broken://"
        request_timeout = 1.0

        async def agent_discover(self, **kwargs):
            raise RuntimeError("a bug, not a broker error")

    kit = Mq9Toolkit(client=Broken())
    with pytest.raises(RuntimeError, match="a bug"):
        tool_call(tools_of(kit)["agent_discover"])


# -- safety options ----------------------------------------------------------------------------


async def _create(client, *names):
    for name in names:
        await client.mailbox_create(name=name)


def test_allow_list_refuses_other_mailboxes_and_allows_created_ones(memory_url):
    kit = Mq9Toolkit(server=memory_url, allowed_mailboxes=["team"])
    tools = tools_of(kit)
    kit.connection.run_sync(lambda client: _create(client, "team.a", "teamx", "other.box"))
    engine = memory_broker(memory_url.removeprefix("memory://"))

    assert tool_call(tools["send_message"], mail_address="team.a", payload="ok").status == "success"
    for outside in ("teamx", "other.box"):
        refused = tool_call(tools["send_message"], mail_address=outside, payload="no")
        assert refused.status == "error"
        assert f"mailbox {outside} is outside the mailboxes this agent may use" in refused.content
        assert engine.mailboxes[outside].messages == {}
    assert tool_call(tools["fetch_messages"], mail_address="other.box").status == "error"

    private = json.loads(tool_call(tools["create_mailbox"]).content)["mail_address"]
    assert (
        tool_call(tools["send_message"], mail_address=private, payload="mine").status == "success"
    )
    assert tool_call(tools["create_mailbox"], name="rogue.box").status == "error"
    assert "rogue.box" not in engine.mailboxes
    kit.close()


def test_read_only_mode_only_discovers_queries_and_peeks(memory_url):
    kit = Mq9Toolkit(server=memory_url, read_only=True)
    tools = tools_of(kit)
    assert set(tools) == {"agent_discover", "fetch_messages", "query_messages"}

    async def seed(client):
        await client.mailbox_create(name="agent.inbox")
        await client.send("agent.inbox", "hello")

    kit.connection.run_sync(seed)
    engine = memory_broker(memory_url.removeprefix("memory://"))
    peek = tool_call(tools["fetch_messages"], mail_address="agent.inbox", max_wait_ms=0)
    assert json.loads(peek.content)["count"] == 1
    again = tool_call(tools["fetch_messages"], mail_address="agent.inbox", max_wait_ms=0)
    assert json.loads(again.content)["count"] == 1  # nothing was consumed
    assert engine.offsets == {} and set(engine.mailboxes) == {"agent.inbox"}  # no claims either
    assert "took nothing" in json.loads(again.content)["next_step"]
    kit.close()


async def test_the_catalog_enforces_read_only_for_every_surface():
    async with Mq9Client("memory://") as client:
        with pytest.raises(
            OperationError, match="send_message is not available: this toolkit is read-only"
        ):
            await OPERATIONS["send_message"].execute(
                client, {"mail_address": "a.b", "payload": "x"}, ToolPolicy(read_only=True)
            )


def test_a_session_keeps_the_rules_and_forgets_the_state():
    policy = ToolPolicy(allowed_mailboxes=("team",), read_only=True, default_group="g")
    policy.created.add("team.private")
    fresh = policy.session()
    assert (fresh.allowed_mailboxes, fresh.read_only, fresh.default_group) == (
        ("team",),
        True,
        "g",
    )
    assert fresh.created == set() and fresh.readings == {}
    # a session is the same agent again (e.g. restarted): the same worker, or the one reader
    assert fresh.worker is policy.worker is None
    assert ToolPolicy(worker="w1").session().worker == "w1"


# -- the registry ------------------------------------------------------------------------------


@pytest.mark.parametrize("discover_by", ["semantic", "text"])
def test_register_creates_the_mailbox_and_an_a2a_card_found_by_one_query(memory_url, discover_by):
    card_fields = {"version": "2.0.0", "skills": ["summaries"]}
    kit = Mq9Toolkit(server=memory_url, agent_card=card_fields, discover_by=discover_by)
    tools = tools_of(kit)
    first = tool_call(
        tools["agent_register"], name="agent.worker", capabilities="summarizes long reports"
    )
    content = json.loads(first.content)
    assert content["registered"] is True and content["mailbox_created"] is True
    engine = memory_broker(memory_url.removeprefix("memory://"))
    assert engine.mailboxes["agent.worker"].expires_at is None
    card = engine.registry.entries["agent.worker"].card
    assert card["version"] == "2.0.0" and card["description"] == "summarizes long reports"
    assert card["supportedInterfaces"][0]["url"] == "mq9://agent.worker"
    assert first.artifact == card

    for query in ("reports", "summarize a report") if discover_by == "semantic" else ("reports",):
        found = json.loads(tool_call(tools["agent_discover"], query=query).content)
        assert found["agents"] == [
            {
                "name": "agent.worker",
                "mailbox": "agent.worker",
                "description": "summarizes long reports",
                "skills": [
                    {"name": "summaries", "description": "summaries", "tags": ["summaries"]}
                ],
            }
        ]
        assert "send_message" in found["next_step"]
    everyone = json.loads(tool_call(tools["agent_discover"], query="").content)
    assert [a["name"] for a in everyone["agents"]] == ["agent.worker"]
    kit.close()


def test_the_agent_mailbox_is_what_agent_register_registers(memory_url):
    kit = Mq9Toolkit(server=memory_url, agent_mailbox="team.me", tools=list(OPERATIONS))
    tools = tools_of(kit)
    first = json.loads(tool_call(tools["agent_register"], capabilities="plans work").content)
    assert first["mail_address"] == "team.me" and first["registered"] is True
    assert "fetch_messages()" in first["next_step"]  # its own mailbox needs no argument
    named = json.loads(
        tool_call(tools["agent_register"], name="planner", capabilities="plans work").content
    )
    assert named["mail_address"] == "team.me"
    engine = memory_broker(memory_url.removeprefix("memory://"))
    assert engine.registry.entries["planner"].card["supportedInterfaces"][0]["url"] == (
        "mq9://team.me"
    )
    tool_call(tools["send_message"], mail_address="team.me", payload="hello")
    assert json.loads(tool_call(tools["query_messages"]).content)["count"] == 1
    fetched = tool_call(tools["fetch_messages"])
    assert [m.payload for m in fetched.artifact] == [b"hello"]
    assert json.loads(tool_call(tools["ack_messages"], msg_id=0).content)["confirmed"] == [0]
    assert tool_call(tools["delete_message"], msg_id=0).status == "success"
    assert tool_call(tools["agent_unregister"]).status == "success"
    assert "team.me" not in engine.registry.entries
    kit.close()


def test_re_registering_says_the_first_card_is_kept(toolkit, memory_url):
    register = tools_of(toolkit)["agent_register"]
    tool_call(register, name="agent.worker", capabilities="summarizes")
    same = json.loads(tool_call(register, name="agent.worker", capabilities="summarizes").content)
    assert same["registered"] is True and same["mailbox_created"] is False
    assert "same card" in same["note"]

    changed = tool_call(register, name="agent.worker", capabilities="summarizes and translates")
    content = json.loads(changed.content)
    assert content["registered"] is False
    assert content["registered_card"]["description"] == "summarizes"
    assert "NOT changed" in content["note"] and "agent_unregister" in content["note"]
    engine = memory_broker(memory_url.removeprefix("memory://"))
    assert engine.registry.entries["agent.worker"].card["description"] == "summarizes"


def test_unregister_then_register_changes_the_card_and_report_is_sent(memory_url):
    kit = Mq9Toolkit(server=memory_url, tools=list(OPERATIONS))
    tools = tools_of(kit)
    engine = memory_broker(memory_url.removeprefix("memory://"))
    tool_call(tools["agent_register"], name="agent.worker", capabilities="summarizes")
    assert tool_call(tools["agent_unregister"], name="agent.worker").status == "success"
    assert "agent.worker" not in engine.registry.entries
    again = json.loads(
        tool_call(tools["agent_register"], name="agent.worker", capabilities="translates").content
    )
    assert again["registered"] is True
    assert engine.registry.entries["agent.worker"].card["description"] == "translates"
    reported = tool_call(
        tools["agent_report"], name="agent.worker", status="busy", details='{"load": 0.5}'
    )
    assert json.loads(reported.content) == {"reported": True, "name": "agent.worker"}
    info, _ = engine.reports["agent.worker"]
    assert json.loads(info) == {"load": 0.5, "status": "busy"}
    # An unknown name is no error on RobustMQ.
    assert tool_call(tools["agent_unregister"], name="agent.ghost").status == "success"
    kit.close()


# -- calling contexts and the one shared connection --------------------------------------------


@pytest.fixture(scope="module")
def monitored_nats():
    with start_nats_server(monitor_port=0) as server:  # (0: the system's choice, read back)
        yield server, server.monitor_port


def open_connections(monitor_port: int, *, settle_to: int | None = None) -> int:
    """nats-server's count of client connections; with ``settle_to``, give the server up to
    5 s to notice closed sockets before answering (it drops them asynchronously)."""
    deadline = time.monotonic() + 5
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/connz", timeout=5) as reply:
            count = json.load(reply)["num_connections"]
        if settle_to is None or count == settle_to or time.monotonic() > deadline:
            return count
        time.sleep(0.02)


@pytest.fixture
def served_nats(monitored_nats):
    """The engine served on its own loop thread, as a separate broker process would be: a
    sync tool call blocking the test's loop must not block the broker too."""
    server, monitor = monitored_nats
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start():
        connection = await nats.connect(server.url)
        return connection, await serve_on_nats(BrokerEngine(), connection)

    connection, service = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield server.url, monitor

    async def stop():
        await service.stop()
        await connection.close()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.mark.slow
async def test_sync_async_in_loop_and_concurrent_calls_share_one_connection(served_nats):
    url, monitor = served_nats
    assert open_connections(monitor) == 1  # the broker's own
    kit = Mq9Toolkit(server=url)
    tools = tools_of(kit)
    assert open_connections(monitor) == 1  # opened lazily

    # sync invoke from inside this running loop (as in a Jupyter cell)
    assert tool_call(tools["create_mailbox"], name="agent.inbox").status == "success"
    # sync invoke from plain code in another thread
    sent = await asyncio.to_thread(
        tool_call, tools["send_message"], mail_address="agent.inbox", payload="s"
    )
    assert sent.status == "success"
    # many concurrent async calls
    results = await asyncio.gather(
        *(
            atool_call(tools["send_message"], mail_address="agent.inbox", payload=f"m{i}")
            for i in range(40)
        )
    )
    assert all(r.status == "success" for r in results)
    assert len({r.artifact for r in results}) == 40  # 40 distinct msg_ids
    assert open_connections(monitor) == 2

    await kit.aclose()
    assert open_connections(monitor, settle_to=1) == 1


@pytest.mark.slow
def test_a_connection_opened_in_asyncio_run_closes_with_it_and_the_next_run_reopens(served_nats):
    url, monitor = served_nats
    kit = Mq9Toolkit(server=url)
    tools = tools_of(kit)

    async def step(tool, **args):
        result = await atool_call(tool, **args)
        # Opened on this loop: one connection besides the broker's, used without a hand-over.
        assert open_connections(monitor) == 2
        return result

    assert asyncio.run(step(tools["create_mailbox"], name="agent.inbox")).status == "success"
    assert open_connections(monitor, settle_to=1) == 1  # closed politely when the run ended
    sent = asyncio.run(step(tools["send_message"], mail_address="agent.inbox", payload="x"))
    assert sent.status == "success"
    assert open_connections(monitor, settle_to=1) == 1

    done = threading.Event()

    def plain_thread():  # sync code with no loop: the connection opens on the shared thread
        result = tool_call(tools["query_messages"], mail_address="agent.inbox")
        assert result.artifact[0].payload == b"x"
        done.set()

    worker = threading.Thread(target=plain_thread)
    worker.start()
    worker.join(10)
    assert done.is_set()
    assert open_connections(monitor) == 2
    kit.close()
    assert open_connections(monitor, settle_to=1) == 1


@pytest.mark.slow
async def test_a_sync_call_on_the_loop_that_owns_the_connection_uses_a_companion(served_nats):
    url, monitor = served_nats
    kit = Mq9Toolkit(server=url)
    tools = tools_of(kit)
    # An await opens the connection on this loop (as a notebook cell would)...
    assert (await atool_call(tools["create_mailbox"], name="agent.inbox")).status == "success"
    # ...and a sync call from this same thread, which blocks this loop, still works.
    sent = tool_call(tools["send_message"], mail_address="agent.inbox", payload="sync")
    assert sent.status == "success"
    assert open_connections(monitor) == 3  # the broker's, this loop's, the companion
    again = await atool_call(tools["query_messages"], mail_address="agent.inbox")
    assert again.artifact[0].payload == b"sync"
    # A group read on one connection is acked on the other: the readers outlive clients.
    fetched = await atool_call(tools["fetch_messages"], mail_address="agent.inbox")
    assert [m.payload for m in fetched.artifact] == [b"sync"]
    acked = tool_call(tools["ack_messages"], mail_address="agent.inbox", msg_id=0)
    assert acked.status == "success", acked.content
    assert tool_call(tools["fetch_messages"], mail_address="agent.inbox").artifact == []
    await kit.aclose()
    assert open_connections(monitor, settle_to=1) == 1


async def test_a_long_poll_fetch_tool_answers_when_the_reply_arrives(toolkit):
    tools = tools_of(toolkit)
    await atool_call(tools["create_mailbox"], name="agent.replies")
    waiting = asyncio.create_task(
        atool_call(tools["fetch_messages"], mail_address="agent.replies", max_wait_ms=60_000)
    )
    await asyncio.sleep(0)  # let the fetch start waiting before the reply is sent
    await atool_call(tools["send_message"], mail_address="agent.replies", payload={"answer": 42})
    result = await asyncio.wait_for(waiting, 10)  # far below the 60 s the fetch may wait
    assert json.loads(result.content)["messages"][0]["payload"] == {"answer": 42}


def test_every_tool_carries_the_hints_mq9_mcp_declares_in_its_metadata():
    from mq9_mcp.server import tool_annotations

    toolkit = Mq9Toolkit(server="memory://hints", calls=True, tools=list(OPERATIONS))
    tools = toolkit.get_tools()
    assert {t.name for t in tools} == set(OPERATIONS)
    for tool in tools:
        hints = tool_annotations(OPERATIONS[tool.name])
        declared = hints.model_dump(by_alias=True, exclude_none=True)
        assert tool.metadata == declared, tool.name
    destructive = {t.name for t in tools if t.metadata.get("destructiveHint")}
    assert destructive == {"delete_message", "agent_unregister", "cancel_call"}
    read_only = {t.name for t in tools if t.metadata.get("readOnlyHint")}
    assert read_only == {"agent_discover", "query_messages", "check_call", "list_calls"}


def test_the_toolkit_docstring_names_every_setting():
    from mq9_platform.operations.config import ToolConfig

    missing = [name for name in ToolConfig.model_fields if f"``{name}``" not in Mq9Toolkit.__doc__]
    assert missing == []


def test_a_run_identity_gets_a_policy_of_its_own_kept_and_bounded(monkeypatch):
    from mq9_platform.operations import policy as tool_policy

    monkeypatch.setattr(tool_policy, "MAX_RUN_IDENTITIES", 2)
    policy = ToolPolicy(agent_mailbox="agent.home", default_group="g")
    assert policy.for_run() is policy
    assert policy.for_run(agent_mailbox="agent.home", default_group="g") is policy  # the same
    ann = policy.for_run(agent_mailbox="agent.ann")
    assert (ann.agent_mailbox, ann.default_group) == ("agent.ann", "g")
    assert policy.for_run(agent_mailbox="agent.ann", default_group="g", worker=None) is ann
    bob = policy.for_run(agent_mailbox="agent.bob", worker="w1")
    assert bob.worker == "w1" and bob is not ann
    policy.for_run(agent_mailbox="agent.ann")  # used last: bob is now the oldest
    policy.for_run(agent_mailbox="agent.cat")
    assert policy.for_run(agent_mailbox="agent.ann") is ann
    assert policy.for_run(agent_mailbox="agent.bob", worker="w1") is not bob  # dropped


def test_parallel_fetches_in_a_second_asyncio_run_share_the_group_reading(memory_url):
    """Issue #35: the second ``asyncio.run`` with parallel fetch_messages calls raised
    ``RuntimeError: <asyncio.locks.Lock> is bound to a different event loop`` (the group's
    reader, kept by the toolkit, was made on the first loop). The reading carries over: what
    the first run handed out is not handed out again."""
    kit = Mq9Toolkit(server=memory_url, num_msgs=1)
    tools = tools_of(kit)

    async def seed():
        await atool_call(tools["create_mailbox"], name="agent.inbox")
        for i in range(4):
            await atool_call(tools["send_message"], mail_address="agent.inbox", payload=f"m{i}")

    async def two_fetches() -> list[dict]:
        results = await asyncio.gather(
            *(atool_call(tools["fetch_messages"], mail_address="agent.inbox") for _ in range(2))
        )
        assert all(r.status == "success" for r in results), [r.content for r in results]
        return [json.loads(r.content) for r in results]

    asyncio.run(seed())
    first = asyncio.run(two_fetches())
    second = asyncio.run(two_fetches())
    handed = [m["msg_id"] for answer in first + second for m in answer["messages"]]
    assert sorted(handed) == [0, 1, 2, 3]
    kit.close()


@pytest.mark.parametrize(
    ("settings", "named", "nearest"),
    [
        ({"allowed_mailbox": ["team"]}, "allowed_mailbox", "allowed_mailboxes"),
        ({"read_onyl": True}, "read_onyl", "read_only"),
        ({"server": "memory://", "tool": ["send_message"]}, "tool", "tools"),
        ({"requst_timeout": 2}, "requst_timeout", "request_timeout"),
    ],
)
def test_a_misspelled_toolkit_option_is_an_error_naming_the_nearest(
    memory_url, settings, named, nearest
):
    """Issue #35: ``Mq9Toolkit(allowed_mailbox=["team"])`` left the toolkit unrestricted (its
    create_mailbox made "payroll.secrets") and ``read_onyl=True`` left it writable."""
    with pytest.raises(TypeError) as refused:
        Mq9Toolkit(**{"server": memory_url, **settings})
    assert f"'{named}'" in str(refused.value) and f"'{nearest}'" in str(refused.value)


@pytest.mark.parametrize("make", [ToolPolicy, lambda **kw: ToolPolicy().session(**kw)])
def test_a_misspelled_tool_setting_is_an_error_naming_the_nearest(make):
    """Issue #35, on the settings mq9-mcp and the toolkit share (``ToolConfig``)."""
    with pytest.raises(TypeError, match=r"'allowed_mailbox'.*'allowed_mailboxes'"):
        make(allowed_mailbox=["team"])


def test_a_toolkit_option_error_never_shows_the_secrets_given():
    with pytest.raises(TypeError) as refused:
        Mq9Toolkit(server="nats://u:hunter2@127.0.0.1:1", client_optons={"password": "hunter2"})
    assert "hunter2" not in str(refused.value) and "'client_options'" in str(refused.value)
