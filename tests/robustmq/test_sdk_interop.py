"""The official mq9 Python SDK (robustmq/mq9 ``python/``) against ``mq9-dev-broker``.

Opt-in: it runs when a snapshot of robustmq/mq9 is on this machine (``MQ9_SDK_REPO`` names a
git directory or checkout holding ``python/mq9``; by default the mirror beside this checkout
that the project's tooling fetches), and is skipped otherwise. The SDK is imported from the
snapshot at test time, never copied into this repository.

Every SDK operation is exercised on the bundled broker nats_broker on a real nats-server. Where the
SDK itself is wrong against RobustMQ, the test asserts the breakage as it is, so a fixed SDK
(or a broker that drifted from RobustMQ) shows up here; docs/protocol.md lists the same items
(and test_sdk_on_robustmq.py what the SDK gets from RobustMQ itself: no answer at all):

* FETCH and QUERY: the SDK base64-decodes ``payload``, which RobustMQ sends as plain text.
* UNREGISTER: the SDK sends ``{"mailbox": ...}``; RobustMQ requires ``{"name": ...}``.
"""

from __future__ import annotations

import binascii
import uuid

import pytest

pytestmark = pytest.mark.slow


def _card(name: str, mailbox: str) -> dict:
    return {
        "name": name,
        "description": "Translates Japanese documents into English",
        "version": "1.0.0",
        "supportedInterfaces": [
            {"url": f"mq9://{mailbox}", "protocolBinding": "mq9", "protocolVersion": "1.0"}
        ],
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [
            {"id": "ja-en", "name": "translation", "description": "Japanese", "tags": ["ja"]}
        ],
    }


async def test_every_sdk_operation_against_the_dev_broker(sdk, nats_broker):
    async with sdk.Mq9Client(nats_broker.url) as client:
        inbox = await client.mailbox_create(name=f"sdk.{uuid.uuid4().hex[:12]}", ttl=0)
        private = await client.mailbox_create()
        assert private and private != inbox

        first = await client.send(inbox, "plain text")
        second = await client.send(inbox, {"task": 1}, priority=sdk.Priority.URGENT)
        keyed = await client.send(inbox, "v1", key="k", tags=["a", "b"], ttl=60)
        assert await client.send(inbox, "later", delay=30) == -1
        assert 0 <= first < second < keyed

        # The SDK base64-decodes text payloads: "plain text" is not base64 at all.
        with pytest.raises(binascii.Error):
            await client.fetch(inbox, group_name="g", deliver="earliest", max_wait_ms=0)
        with pytest.raises(binascii.Error):
            await client.query(inbox)
        # A payload that happens to be valid base64 comes back silently changed.
        odd = await client.mailbox_create(name=f"sdk.{uuid.uuid4().hex[:12]}")
        await client.send(odd, "abcd")
        [changed] = await client.query(odd)
        assert changed.payload != b"abcd"

        await client.ack(inbox, "g", keyed)  # the ack itself is RobustMQ-shaped
        await client.delete(inbox, first)

        await client.agent_register(_card("sdk-translator", inbox))
        found = await client.agent_discover(text="japanese")
        assert [agent["name"] for agent in found] == ["sdk-translator"]
        await client.agent_report({"name": "sdk-translator", "report_info": "busy"})
        # The SDK unregisters by mailbox; RobustMQ reads only a name.
        with pytest.raises(sdk.Mq9Error, match="missing field `name`"):
            await client.agent_unregister(inbox)

        seen = []

        async def handler(message):
            seen.append(message.msg_id)

        consumer = await client.consume(odd, handler, group_name="c", deliver="earliest")
        await consumer.stop()


async def test_toolkit_over_an_sdk_client(sdk, nats_broker):
    """``Mq9Toolkit(client=<official mq9.Mq9Client>)``: the tools that do not decode payloads
    work through the SDK as it is."""
    from langchain_mq9 import Mq9Toolkit

    async with sdk.Mq9Client(nats_broker.url) as client:
        tools = {t.name: t for t in Mq9Toolkit(client=client).get_tools()}
        address = f"sdk.{uuid.uuid4().hex[:12]}"
        created = await tools["create_mailbox"].ainvoke({"name": address})
        assert address in str(created)
        sent = await tools["send_message"].ainvoke(
            {"mail_address": address, "payload": "hello", "priority": "urgent"}
        )
        assert "msg_id" in str(sent)
        raw = await nats_broker.raw(f"$mq9.AI.MSG.QUERY.{address}", b"{}")
        assert [(m["payload"], m["priority"]) for m in raw["messages"]] == [("hello", "urgent")]
