"""A real a2a-sdk client over the mq9 binding sets, reads, lists and deletes a task's push
notification configs on an agent served with push_destinations (#62); a webhook receiver on
loopback, allow-listed, gets each later state of the task, signed with the config's token. A
URL inside the network the operator did not allow is refused; another caller's request finds
no task; an agent without push says so; a config inside SendMessage is refused in words."""

from __future__ import annotations

import asyncio

import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import (
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.errors import (
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotFoundError,
)

from mq9_platform.a2a import mail as w
from mq9_platform.a2a.sdk.transport import mq9_agent_card, register_mq9
from mq9_platform.a2a.server import AgentServer
from mq9_platform.wake import Destinations
from testbed.support.a2a_support import text_graph, text_io
from tests.platform.a2a.push_support import Receiver, registered_jwks

AGENT = "agent.pushing"
TOKEN = "tok-" + "7" * 20


def request(text: str) -> SendMessageRequest:
    msg = Message(message_id="m-" + text, role=Role.ROLE_USER, parts=[Part(text=text)])
    return SendMessageRequest(
        message=msg, configuration=SendMessageConfiguration(return_immediately=True)
    )


async def a2a_client(client, reply_mailbox: str | None = None):
    factory = ClientFactory(ClientConfig(supported_protocol_bindings=["mq9"], streaming=False))
    register_mq9(factory, client, reply_mailbox=reply_mailbox)
    return factory.create(await mq9_agent_card(client, AGENT))


async def sent(a2a, text: str) -> str:
    events = [event async for event in a2a.send_message(request(text))]
    return events[-1].task.id


class Gate:
    """The agent's work waits until opened: the task stays working while the test sets push."""

    def __init__(self) -> None:
        self.open = asyncio.Event()

    async def __call__(self, text: str) -> str:
        await self.open.wait()
        return text.upper()


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_an_a2a_sdk_client_sets_push_and_the_receiver_gets_signed_states(client):
    gate = Gate()
    allowed = Destinations(hosts=["127.0.0.1/32"])
    server = AgentServer(
        text_graph(gate),
        name=AGENT,
        client=client,
        worker="w1",
        push_destinations=allowed,
        **text_io(),
    )
    with Receiver() as receiver:
        async with server:
            a2a = await a2a_client(client)
            card = await mq9_agent_card(client, AGENT)
            assert card.capabilities.push_notifications
            receiver.keys = await registered_jwks(client, AGENT)  # from the registry's card
            task_id = await sent(a2a, "hello")
            made = await a2a.create_task_push_notification_config(
                TaskPushNotificationConfig(task_id=task_id, url=receiver.url, token=TOKEN)
            )
            assert made.id and made.url == receiver.url and made.task_id == task_id
            got = await a2a.get_task_push_notification_config(
                GetTaskPushNotificationConfigRequest(task_id=task_id, id=made.id)
            )
            assert got.url == receiver.url and got.token == TOKEN
            with pytest.raises(InvalidParamsError, match="push config"):  # the task is there
                await a2a.get_task_push_notification_config(
                    GetTaskPushNotificationConfigRequest(task_id=task_id, id="no-such-config")
                )
            # (#113) read by its code, not its words: an id saying "not enabled" is still an
            # unknown config, not an agent without push (as it read before)
            with pytest.raises(InvalidParamsError, match="push config"):
                await a2a.get_task_push_notification_config(
                    GetTaskPushNotificationConfigRequest(task_id=task_id, id="push not enabled")
                )
            listed = await a2a.list_task_push_notification_configs(
                ListTaskPushNotificationConfigsRequest(task_id=task_id)
            )
            assert [c.id for c in listed.configs] == [made.id]

            # the attacker's URL: the cloud metadata address, which the operator did not allow
            with pytest.raises(InvalidParamsError, match="refused"):
                await a2a.create_task_push_notification_config(
                    TaskPushNotificationConfig(task_id=task_id, url="http://169.254.169.254/latest")
                )
            # another caller (its own reply mailbox) neither sees nor sets the task's configs
            stranger = await a2a_client(client)
            with pytest.raises(TaskNotFoundError):
                await stranger.list_task_push_notification_configs(
                    ListTaskPushNotificationConfigsRequest(task_id=task_id)
                )

            gate.open.set()
            pushed = await receiver.until(TOKEN, w.COMPLETED)
            assert pushed[-1]["id"] == task_id
            assert pushed[-1]["artifacts"][0]["parts"][0]["text"] == "HELLO"

            await a2a.delete_task_push_notification_config(
                DeleteTaskPushNotificationConfigRequest(task_id=task_id, id=made.id)
            )
            listed = await a2a.list_task_push_notification_configs(
                ListTaskPushNotificationConfigsRequest(task_id=task_id)
            )
            assert list(listed.configs) == []
            done = await a2a.get_task(GetTaskRequest(id=task_id))
            assert done.status.state == TaskState.TASK_STATE_COMPLETED


async def test_an_agent_without_push_and_a_config_inside_send_are_refused_in_words(client):
    gate = Gate()
    gate.open.set()
    async with AgentServer(text_graph(gate), name=AGENT, client=client, worker="w1", **text_io()):
        a2a = await a2a_client(client)
        task_id = await sent(a2a, "hi")
        with pytest.raises(PushNotificationNotSupportedError, match="not enabled"):
            await a2a.create_task_push_notification_config(
                TaskPushNotificationConfig(task_id=task_id, url="http://127.0.0.1:9/x")
            )
        inside = request("again")
        inside.configuration.task_push_notification_config.url = "http://127.0.0.1:9/x"
        with pytest.raises(InvalidParamsError, match="CreateTaskPushNotificationConfig"):
            [event async for event in a2a.send_message(inside)]
        with pytest.raises(TaskNotFoundError):  # a task this caller never sent
            await a2a.list_task_push_notification_configs(
                ListTaskPushNotificationConfigsRequest(task_id="no-such-task")
            )
