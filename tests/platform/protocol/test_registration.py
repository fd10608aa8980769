"""REGISTER with the bodies the mq9 documents and the official SDKs write (issue #25, item 1):
each becomes the A2A card RobustMQ indexes, so the agent is found by what it said it does, and
no field given is dropped without an error that names it.

The bodies are copied from /work/shared/reference (the Python SDK page and the engineer guide)
and from robustmq/mq9 at 37dbe40: README.md, demo/python/agent_demo.py,
demo/javascript/agent_demo.ts, python/mq9/a2a/agent.py with demo/python/a2a_demo.py's card,
and protocol.md's ``{ ...AgentCard, mailbox = "mq9://broker/..." }``.
"""

from __future__ import annotations

import uuid

import pytest

from mq9_broker import BrokerEngine, drop_memory_broker, install_memory_broker
from mq9_platform import Mq9Client
from mq9_wire import protocol as p
from mq9_wire.protocol.registration import card_for


@pytest.fixture
def memory_url():
    name = f"registration{uuid.uuid4().hex}"
    install_memory_broker(name, BrokerEngine())
    yield f"memory://{name}"
    drop_memory_broker(name)


GUIDE = {  # engineer guide, README (Python and JavaScript), the Go example
    "name": "agent.translator",
    "mailbox": "agent.translator",
    "payload": "Multilingual translation; EN/ZH/JA/KO",
}
DEMO = {  # demo/python/agent_demo.py and demo/javascript/agent_demo.ts
    "name": "demo.python.translator",
    "mailbox": "demo.python.translator",
    "payload": (
        "Multilingual translation agent. "
        "Supports EN, ZH, JA, KO. "
        "Input: text + target language. Output: translated text."
    ),
}
A2A_CARD = {  # json_format.MessageToDict of demo/python/a2a_demo.py's AGENT_A_CARD
    "name": "demo.agent.translator",
    "description": "Multilingual translation agent. "
    "Send text + target_lang (en/zh/ja), get back translated text.",
    "version": "1.0.0",
    "skills": [
        {
            "id": "translate",
            "name": "Translate text",
            "description": "Translates text between EN, ZH, JA, KO.",
        }
    ],
    "capabilities": {"streaming": True},
}
SDK_A2A_AGENT = {  # python/mq9/a2a/agent.py, Mq9A2AAgent.register
    "name": "demo.agent.translator",
    "mailbox": "demo.agent.translator.inbox",
    "payload": A2A_CARD["description"],
    "agent_card": A2A_CARD,
}
SDK_PAGE = {  # Python SDK page: AgentCard(...).model_dump() with card["mailbox"] = mq9://broker/…
    "name": "agent.translator",
    "description": "Translates documents between languages",
    "url": "https://translator.example.com/a2a",
    "version": "1.0.0",
    "protocol_version": "0.3.0",
    "preferred_transport": "JSONRPC",
    "capabilities": {"streaming": False, "push_notifications": None},
    "default_input_modes": ["text/plain"],
    "default_output_modes": ["text/plain"],
    "skills": [
        {
            "id": "translate",
            "name": "Translate",
            "description": "Translation between English and Japanese",
            "tags": ["translation"],
            "examples": None,
            "input_modes": None,
            "output_modes": None,
            "security": None,
        }
    ],
    "provider": None,
    "documentation_url": None,
    "icon_url": None,
    "additional_interfaces": None,
    "security": None,
    "security_schemes": None,
    "signatures": None,
    "supports_authenticated_extended_card": None,
    "mailbox": "mq9://broker/agent.inbox",
}
PROTOCOL_MD = {  # protocol.md: { ...AgentCard, mailbox = "mq9://broker/agent.translator.inbox" }
    **{k: v for k, v in A2A_CARD.items() if k != "name"},
    "name": "agent.translator",
    "mailbox": "mq9://broker/agent.translator.inbox",
}


@pytest.mark.parametrize(
    "body, mailbox, description",
    [
        (GUIDE, "agent.translator", GUIDE["payload"]),
        (DEMO, "demo.python.translator", DEMO["payload"]),
        (SDK_A2A_AGENT, "demo.agent.translator.inbox", A2A_CARD["description"]),
        (SDK_PAGE, "agent.inbox", SDK_PAGE["description"]),
        (PROTOCOL_MD, "agent.translator.inbox", A2A_CARD["description"]),
    ],
    ids=["guide", "sdk-demos", "sdk-a2a-agent", "sdk-page", "protocol-md"],
)
async def test_the_documented_bodies_register_a_findable_card(broker, body, mailbox, description):
    async with broker.client() as client:
        await client.agent_register(dict(body))
        await broker.search_settled(body["name"])  # (RobustMQ's index trails its registry)
        listed = {a["name"]: a for a in await client.agent_discover()}
        found = await client.agent_discover(semantic="translate Chinese to English", limit=5)
        by_text = await client.agent_discover(text="translation", limit=5)
    agent = listed[body["name"]]
    assert agent["mailbox"] == mailbox and agent["description"] == description
    assert found[0]["name"] == body["name"] and found[0]["mailbox"] == mailbox
    assert body["name"] in [a["name"] for a in by_text]


def test_every_given_field_has_its_place_in_the_card():
    card = card_for(SDK_A2A_AGENT)
    assert card["capabilities"] == {"streaming": True}
    assert card["skills"][0]["id"] == "translate" and card["version"] == "1.0.0"
    page = card_for(SDK_PAGE)
    assert page["capabilities"] == {"streaming": False}  # None: not given, as serde reads it
    assert page["skills"][0]["tags"] == ["translation"]
    assert {
        "url": "https://translator.example.com/a2a",
        "protocolBinding": "JSONRPC",
        "protocolVersion": "0.3.0",
    } in page["supportedInterfaces"]
    assert p.card_mailbox(page) == "agent.inbox"
    assert p.a2a_card(page) == page  # what RobustMQ stores is what was sent


@pytest.mark.parametrize(
    "body, named",
    [
        ({**GUIDE, "owner": "team-a"}, "'owner'"),
        ({**GUIDE, "payload": {"text": "x"}}, "payload"),
        ({**GUIDE, "description": "Something else"}, "description"),
        ({**SDK_PAGE, "security": [{"oauth": []}]}, "'security'"),
        ({**SDK_PAGE, "supports_authenticated_extended_card": True}, "supports_authenticated"),
        ({**GUIDE, "skills": [{"name": "x", "level": "expert"}]}, "'level'"),
        ({**GUIDE, "mailbox": "https://elsewhere/x"}, "mailbox"),
        ({**GUIDE, "version": 2}, "'version'"),
        ({**SDK_A2A_AGENT, "agent_card": {**A2A_CARD, "name": "other"}}, "another agent"),
        ({**GUIDE, "preferred_transport": "GRPC"}, "url"),
    ],
)
async def test_a_field_without_a_place_is_an_error_that_names_it(body, named, memory_url):
    async with Mq9Client(memory_url) as client:
        with pytest.raises(ValueError, match=named):
            await client.agent_register(body)
        assert await client.agent_discover() == []  # nothing was registered


async def test_name_and_payload_alone_stay_robustmqs_raw_registration(memory_url):
    async with Mq9Client(memory_url) as client:
        await client.agent_register({"name": "raw", "payload": "opaque text"})
        [agent] = await client.agent_discover()
    assert agent == {"name": "raw", "mailbox": None, "agent_info": "opaque text"}
