"""What the A2A conformance kit asks of the gateway (#71), each with a real a2a-sdk client (or raw
HTTP where the kit sends raw HTTP) against an a2a-sdk AgentExecutor served over mq9:
refusals come at once (a blocking send given an hour's ``send_wait`` would otherwise hang the
test's guard), parts and Message answers arrive as the agent gave them, both bindings answer,
and a subscription opens at once and ends when the gateway stops (#70)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets

import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.server.agent_execution import AgentExecutor
from a2a.server.tasks import TaskUpdater
from a2a.types.a2a_pb2 import (
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.errors import A2AError
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Value
from http_agents import serve_http

from mq9_platform._http.tokens_file import digest_line
from mq9_platform.a2a.gateway import Tenants, gateway_app
from mq9_platform.a2a.gateway.push import GatewayPush
from mq9_platform.a2a.sdk.executor import serve_executor
from mq9_platform.wake.deliver import Destinations
from testbed.ports import unclaimed_port

AGENT = "agent.parts"
TOKEN = secrets.token_hex(16)
GUARD = 60  # seconds: only a hang reaches it (send_wait is an hour)


class Parts(AgentExecutor):
    """Answers by the first word of the text: each a way an a2a-sdk agent may answer."""

    def __init__(self) -> None:
        self.seen: list[Message] = []

    async def execute(self, context, event_queue) -> None:
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        self.seen.append(context.message)
        word = (context.get_user_input() or "").split(" ")[0]
        if word == "file":
            raw = Part(raw=b"tck", media_type="text/plain", filename="output.txt")
            await updater.add_artifact([raw], name="report")
            await updater.complete()
        elif word == "data":
            data = json_format.Parse('{"key": "value", "count": 42}', Value())
            await updater.add_artifact([Part(data=data)])
            await updater.complete()
        elif word == "chunks":
            await updater.add_artifact([Part(text="one ")], artifact_id="a1")
            await updater.add_artifact([Part(text="two")], artifact_id="a1", append=True)
            await updater.complete()
        elif word == "say":
            await updater.complete(updater.new_agent_message([Part(text="Hello from mq9")]))
        elif word == "message":
            await event_queue.enqueue_event(updater.new_agent_message([Part(text="direct")]))
        elif word == "wait":
            await updater.start_work()
            await asyncio.sleep(3600)  # until canceled
        elif word == "ask" and context.current_task is None:
            await updater.requires_input(updater.new_agent_message([Part(text="Which one?")]))
        else:
            await updater.add_artifact([Part(text=f"got {context.get_user_input()!r}")])
            await updater.complete()

    async def cancel(self, context, event_queue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


@contextlib.asynccontextmanager
async def gateway(client, *, agent: Parts | None = None, **options):
    """The gateway (send_wait an hour) in front of ``agent`` served over mq9, or of an agent
    never started when ``agent`` is None: the agent's URL."""
    port = unclaimed_port()
    base = f"http://127.0.0.1:{port}"
    options.setdefault("send_wait", 3600)
    server = None
    if agent is not None:
        server = await serve_executor(agent, name=AGENT, client=client, worker="w1")
    try:
        tenants = Tenants({"alice": TOKEN})
        app = await gateway_app(client, [AGENT], tenants=tenants, public_url=base, **options)
        async with serve_http(app, port):
            yield f"{base}/a2a/{AGENT}"
    finally:
        if server is not None:
            await server.stop()


@contextlib.asynccontextmanager
async def a2a_client(url: str, *, binding: str = "JSONRPC", streaming: bool = False):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=GUARD) as http:
        card = await A2ACardResolver(http, url).get_agent_card()
        config = ClientConfig(
            httpx_client=http,
            streaming=streaming,
            supported_protocol_bindings=[binding],
        )
        yield ClientFactory(config).create(card)


def request(text: str, *, task_id: str = "", context_id: str = "", parts=None):
    msg = Message(
        message_id=secrets.token_hex(4),
        role=Role.ROLE_USER,
        parts=parts or [Part(text=text)],
        task_id=task_id,
        context_id=context_id,
    )
    return SendMessageRequest(message=msg)


async def send(a2a, req):
    """The last event of a blocking send, under the hang guard."""

    async def last():
        return [e async for e in a2a.send_message(req)][-1]

    return await asyncio.wait_for(last(), GUARD)


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_artifacts_status_messages_and_message_answers_arrive_as_the_agent_gave_them(
    client, binding
):
    async with gateway(client, agent=Parts()) as url, a2a_client(url, binding=binding) as a2a:
        filed = (await send(a2a, request("file please"))).task
        assert filed.status.state == TaskState.TASK_STATE_COMPLETED
        part = filed.artifacts[0].parts[0]
        assert (part.raw, part.filename, part.media_type) == (b"tck", "output.txt", "text/plain")
        assert filed.artifacts[0].name == "report"
        data = (await send(a2a, request("data please"))).task.artifacts[0].parts[0]
        assert json_format.MessageToDict(data.data) == {"key": "value", "count": 42}
        chunked = (await send(a2a, request("chunks please"))).task
        assert [p.text for p in chunked.artifacts[0].parts] == ["one ", "two"]
        said = (await send(a2a, request("say hello"))).task
        assert said.status.message.parts[0].text == "Hello from mq9"
        assert said.status.message.role == Role.ROLE_AGENT
        answer = await send(a2a, request("message please"))
        assert answer.HasField("message") and not answer.HasField("task")
        assert answer.message.parts[0].text == "direct" and answer.message.message_id


async def test_a_raw_bytes_part_reaches_the_agent_and_is_answered_at_once(client):
    agent = Parts()
    raw = Part(raw=b"tck", media_type="application/x-unsupported-tck-type")
    async with gateway(client, agent=agent) as url, a2a_client(url) as a2a:
        done = (await send(a2a, request("", parts=[raw]))).task
        assert done.status.state == TaskState.TASK_STATE_COMPLETED
        assert agent.seen[-1].parts[0].raw == b"tck"
        assert done.history[0].parts[0].media_type == "application/x-unsupported-tck-type"


async def test_a_send_to_an_ended_task_or_in_another_context_is_refused_at_once(client):
    async with gateway(client, agent=Parts()) as url, a2a_client(url) as a2a:
        done = (await send(a2a, request("hello"))).task
        assert done.status.state == TaskState.TASK_STATE_COMPLETED
        with pytest.raises(A2AError, match="completed: it takes no more messages"):
            await send(a2a, request("more", task_id=done.id))
        asked = (await send(a2a, request("ask"))).task
        assert asked.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        question = asked.status.message  # as the executor asked it
        assert question.parts[0].text == "Which one?" and question.role == Role.ROLE_AGENT
        assert question.task_id == asked.id and question.message_id
        with pytest.raises(A2AError, match="contextId"):
            await send(a2a, request("the red one", task_id=asked.id, context_id="elsewhere"))
        answered = (await send(a2a, request("the red one", task_id=asked.id))).task
        assert answered.status.state == TaskState.TASK_STATE_COMPLETED
        assert answered.context_id == asked.context_id


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_the_agents_refusal_ends_a_blocking_send_at_once(client):
    """An answer to a task that asks nothing (it is working): the gateway's own look lets it
    through, the agent refuses it in an error answer, which the send reads at once instead of
    waiting out send_wait."""
    async with gateway(client, agent=Parts()) as url, a2a_client(url) as a2a:
        req = request("wait")
        req.configuration.return_immediately = True
        task = (await send(a2a, req)).task
        for _ in range(GUARD * 20):
            got = await a2a.get_task(GetTaskRequest(id=task.id))
            if got.status.state == TaskState.TASK_STATE_WORKING:
                break
            await asyncio.sleep(0.05)
        assert got.status.state == TaskState.TASK_STATE_WORKING
        with pytest.raises(A2AError, match="working: only an input-required task"):
            await send(a2a, request("hurry", task_id=task.id))


async def test_get_task_keeps_to_history_length(client):
    async with gateway(client, agent=Parts()) as url, a2a_client(url) as a2a:
        asked = (await send(a2a, request("ask"))).task
        await send(a2a, request("the red one", task_id=asked.id))
        full = await a2a.get_task(GetTaskRequest(id=asked.id))
        assert len(full.history) == 2
        one = await a2a.get_task(GetTaskRequest(id=asked.id, history_length=1))
        assert [m.parts[0].text for m in one.history] == ["the red one"]
        none = await a2a.get_task(GetTaskRequest(id=asked.id, history_length=0))
        assert len(none.history) == 0
        req = request("hello")
        req.configuration.history_length = 0
        assert len((await send(a2a, req)).task.history) == 0


async def test_subscribe_refuses_an_ended_task_and_follows_an_asking_one_to_its_end(client):
    async with (
        gateway(client, agent=Parts()) as url,
        a2a_client(url) as a2a,
        a2a_client(url, streaming=True) as streaming,
    ):
        done = (await send(a2a, request("hello"))).task
        with pytest.raises(A2AError, match="completed"):
            await asyncio.wait_for(
                anext(streaming.subscribe(SubscribeToTaskRequest(id=done.id))), GUARD
            )
        asked = (await send(a2a, request("ask"))).task
        seen = []

        async def follow():
            async for event in streaming.subscribe(SubscribeToTaskRequest(id=asked.id)):
                seen.append(event.task.status.state)

        following = asyncio.create_task(follow())
        while not seen:
            await asyncio.sleep(0.05)
        assert seen == [TaskState.TASK_STATE_INPUT_REQUIRED]  # the task as it stands, first
        await send(a2a, request("the red one", task_id=asked.id))
        await asyncio.wait_for(following, GUARD)
        assert seen[-1] == TaskState.TASK_STATE_COMPLETED


async def test_a_subscription_to_an_offline_agents_task_opens_at_once_and_ends_at_close(client):
    """#70: the task as it stands comes first (headers and all) while the agent is offline,
    and a gateway that stops ends the stream with the task's state."""
    closing = asyncio.Event()
    async with (
        gateway(client, closing=closing) as url,
        a2a_client(url) as a2a,
        a2a_client(url, streaming=True) as streaming,
    ):
        req = request("later")
        req.configuration.return_immediately = True
        task = (await send(a2a, req)).task
        stream = streaming.subscribe(SubscribeToTaskRequest(id=task.id))
        first = await asyncio.wait_for(anext(stream), GUARD)
        assert first.task.id == task.id
        assert first.task.status.state == TaskState.TASK_STATE_SUBMITTED
        closing.set()
        rest = await asyncio.wait_for(_drain(stream), GUARD)  # ended: the gateway stops
        assert all(e.task.id == task.id for e in rest)


async def _drain(stream):
    return [event async for event in stream]


async def test_a_push_config_given_in_the_send_is_kept_for_the_task(client):
    push = GatewayPush(Destinations(hosts=["127.0.0.1"]))
    try:
        async with gateway(client, push=push) as url, a2a_client(url) as a2a:
            req = request("later")
            req.configuration.return_immediately = True
            req.configuration.task_push_notification_config.CopyFrom(
                TaskPushNotificationConfig(id="p1", url="http://127.0.0.1:9/hook")
            )
            task = (await send(a2a, req)).task
            listed = await a2a.list_task_push_notification_configs(
                ListTaskPushNotificationConfigsRequest(task_id=task.id)
            )
            assert [c.id for c in listed.configs] == ["p1"]
            refused = request("nowhere")
            refused.configuration.task_push_notification_config.CopyFrom(
                TaskPushNotificationConfig(url="http://169.254.169.254/latest")
            )
            with pytest.raises(A2AError, match="refused"):
                await send(a2a, refused)
    finally:
        await push.close()


async def test_both_bindings_are_on_the_card_and_a_trailing_slash_is_the_same_endpoint(client):
    async with gateway(client, agent=Parts()) as url:
        headers = {"Authorization": f"Bearer {TOKEN}", "A2A-Version": "1.0"}
        async with httpx.AsyncClient(headers=headers, timeout=GUARD) as http:
            card = await http.get(url + "/.well-known/agent-card.json")
            bindings = [i["protocolBinding"] for i in card.json()["supportedInterfaces"]]
            assert bindings == ["JSONRPC", "HTTP+JSON"]
            assert "max-age" in card.headers["cache-control"]
            assert card.headers["etag"] and card.headers["last-modified"]
            body = {"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}
            slashed = await http.post(url + "/", json=body)
            assert slashed.status_code == 200 and "result" in slashed.json()
            text = await http.post(url, content=b"{}", headers={"Content-Type": "text/plain"})
            assert text.json()["error"]["code"] == -32005
            rest = await http.post(
                url + "/rest/message:send",
                content=b"{}",
                headers={"Content-Type": "text/plain"},
            )
            assert rest.status_code == 415
            sent = await http.post(
                url + "/rest/message:send",
                json={
                    "message": {
                        "role": "ROLE_USER",
                        "messageId": "m1",
                        "parts": [{"text": "hello"}],
                    }
                },
            )
            assert sent.headers["content-type"].startswith("application/json")
            assert sent.json()["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


def test_raw_parts_are_named_in_the_text_a_graph_reads():
    from mq9_platform.a2a import mail as w

    raw = base64.b64encode(b"%PDF").decode()
    parts = [{"raw": raw, "filename": "a.pdf", "mediaType": "application/pdf"}]
    assert w.parts_text(parts) == "[a.pdf, application/pdf]"


@pytest.mark.slow
async def test_the_gateway_process_exits_on_sigterm_with_a_subscription_open(nats_broker, tmp_path):
    """#70: a subscription to an offline agent's task opens at once; SIGTERM ends it with the
    task's state and the process exits (before: nothing for 20 s+, and no exit in 60 s)."""
    import signal
    import subprocess
    import sys

    tokens = tmp_path / "tokens.json"
    tokens.write_text(digest_line("alice", TOKEN) + "\n")
    port = unclaimed_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mq9_platform.a2a.gateway.cli", "--server", nats_broker.url,
            "--agent", AGENT, "--listen", f"127.0.0.1:{port}", "--tokens-file", str(tokens),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/a2a/{AGENT}"
    try:
        for _ in range(GUARD * 5):  # the process imports a2a-sdk first
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient(timeout=5) as http:
                    await http.get(url + "/.well-known/agent-card.json")
                    break
            assert process.poll() is None, process.communicate()[1].decode()
            await asyncio.sleep(0.2)
        async with a2a_client(url) as a2a, a2a_client(url, streaming=True) as streaming:
            req = request("later")
            req.configuration.return_immediately = True
            task = (await send(a2a, req)).task
            stream = streaming.subscribe(SubscribeToTaskRequest(id=task.id))
            first = await asyncio.wait_for(anext(stream), GUARD)
            assert first.task.status.state == TaskState.TASK_STATE_SUBMITTED
            process.send_signal(signal.SIGTERM)
            rest = await asyncio.wait_for(_drain(stream), GUARD)
            assert all(e.task.id == task.id for e in rest)
        # uvicorn stops, then lets the signal end the process as it would have
        assert await asyncio.to_thread(process.wait, GUARD) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
