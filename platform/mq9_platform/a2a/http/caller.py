"""Calls to HTTP A2A agents (a2a-sdk servers, LangGraph's Agent Server, ...) for ``AgentCaller``:
the same call record and task states in the caller's reply mailbox as a call over mq9, so
``check``, ``answer``, ``cancel`` and ``calls`` work alike, also from a restarted process.

An HTTP agent does not write to our mailbox: the caller keeps what the agent answers (each
state, under our own task id: a remote id is never a key of ours, so an agent cannot overwrite
another call's state), and asks the agent again (GetTask) while a check waits. Every request
goes only where the host allow-list lets it (``hosts.py``). Needs the ``a2a`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import httpx
from a2a.client import ClientConfig, ClientFactory
from a2a.client.client import Client
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    SendMessageRequest,
    StreamResponse,
    Task,
)

from mq9_wire.protocol import clipped

from ..._http.hosts import HostPolicy, HostRefused
from ..._http.ssrf import ResponseTooLarge, guarded_client
from .. import mail as w
from ..sdk.protojson import (
    artifact_json,
    json_object,
    message_json,
    status_json,
    task_json,
    to_proto,
)
from ..shapes import CallRecord, CardJson, MessageJson, TaskJson

# How long one HTTP request may take in all (connecting, headers, body, a stream's first
# event), however slowly the agent sends: never per read, which a peer sending a byte at a
# time would hold for ever. A call that waits less ends its requests at its own deadline.
REQUEST_TIMEOUT = 30.0
# How long closing a client (and the stream it holds) may take: a peer cannot hold it either.
CLOSE_SECONDS = 5.0
# The most of an agent's answer kept as one state (the broker carries about 1 MB a message).
MAX_KEPT_CHARS = 200_000
# What an agent's answer may weigh on the wire before we stop reading it.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024

Keep = Callable[[TaskJson], Awaitable[None]]


class AgentUnreachable(Exception):
    """The HTTP agent could not be reached or answered no A2A, in words for the caller
    (``status``: the HTTP status that said so, if one did)."""

    def __init__(self, text: str, status: int | None = None, *, late: bool = False) -> None:
        super().__init__(text)
        self.status = status
        self.late = late  # it sent nothing (or not all) before the request's deadline


def _late(url: str, seconds: float, what: str = "answered") -> AgentUnreachable:
    return AgentUnreachable(f"{url} had not {what} within {seconds:.3g} s", late=True)


async def _closed(closing: Awaitable[object]) -> None:
    """Close something that talks to a peer, within ``CLOSE_SECONDS`` and quietly."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(closing, CLOSE_SECONDS)


def _why(exc: BaseException) -> str:
    if isinstance(exc, (HostRefused, ResponseTooLarge)):
        return str(exc)
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, (HostRefused, ResponseTooLarge)):
        return str(cause)
    return clipped(f"{type(exc).__name__}: {exc}", 500)


def http_client(hosts: HostPolicy, *, timeout: float = REQUEST_TIMEOUT) -> httpx.AsyncClient:
    """An httpx client that reaches only allowed hosts, at the addresses checked, follows no
    redirect and reads no more than ``MAX_RESPONSE_BYTES`` of an answer (announced or
    streamed): the package's SSRF guard."""
    return guarded_client(hosts, timeout=timeout, max_bytes=MAX_RESPONSE_BYTES)


def snapshot_of(event: StreamResponse, before: TaskJson | None) -> TaskJson:
    """The task as it stands after ``event`` (a task, a status or artifact update, or a
    message, which ends the task completed with its text), in A2A JSON."""
    kind = event.WhichOneof("payload")
    if kind == "task":
        return task_json(event.task)
    if kind == "message":
        msg = message_json(event.message)
        snap = w.task(
            str(msg.get("taskId") or (before and before.get("id")) or w.new_id()),
            str(msg.get("contextId") or (before and before.get("contextId")) or ""),
            w.COMPLETED,
            artifacts=[w.artifact(w.parts_text(msg.get("parts")))],
        )
        return snap
    # (an update before any task: the task it names is filled in below, bit by bit)
    snap = cast(TaskJson, dict(before or {}))
    if kind == "status_update":
        update = event.status_update
        snap.setdefault("id", update.task_id)
        snap.setdefault("contextId", update.context_id)
        snap["status"] = status_json(update.status)
    elif kind == "artifact_update":
        update = event.artifact_update
        snap.setdefault("id", update.task_id)
        snap.setdefault("contextId", update.context_id)
        artifact = artifact_json(update.artifact)
        artifacts = list(snap.get("artifacts") or [])
        same = [a for a in artifacts if a.get("artifactId") == artifact.get("artifactId")]
        if update.append and same:
            same[0]["parts"] = [*same[0].get("parts", []), *artifact.get("parts", [])]
        else:
            artifacts.append(artifact)
        snap["artifacts"] = artifacts
    return snap


def kept(remote: TaskJson, task_id: str) -> TaskJson:
    """What we keep of an agent's task: under our id, without its history (our record holds
    the request), and cut to ``MAX_KEPT_CHARS`` of text when larger."""
    left_out = ("history", "id", "metadata")  # (the id: ours, set after the rest)
    snap = cast(TaskJson, {k: v for k, v in remote.items() if k not in left_out})
    snap["id"] = task_id
    if w.task_state(snap) == w.COMPLETED and not snap.get("artifacts"):
        # An answer given as a message only (LangGraph's GetTask: the last agent message of
        # its history) is the result.
        answer = _last_agent_text(remote.get("history"))
        if answer:
            snap["artifacts"] = [w.artifact(answer)]
    if len(w.json_text(snap)) > MAX_KEPT_CHARS:
        text = clipped(w.result_text(snap), MAX_KEPT_CHARS // 2)
        snap["artifacts"] = [w.artifact(text)] if text else []
        status = snap.get("status")
        if isinstance(status, dict) and isinstance(status.get("message"), dict):
            question = clipped(w.status_text(snap), MAX_KEPT_CHARS // 4)
            status["message"] = w.message(question, role="ROLE_AGENT")
    return snap


def _last_agent_text(history: object) -> str:
    """The text of the agent's messages after the caller's last one in a task's history."""
    said: list[str] = []
    for msg in history if isinstance(history, list) else ():
        if not isinstance(msg, dict):
            continue
        if msg.get("role") == "ROLE_USER":
            said = []
        elif msg.get("role") == "ROLE_AGENT":
            said.append(w.parts_text(msg.get("parts")))
    return "\n".join(t for t in said if t)


class HttpAgent:
    """One HTTP A2A agent, reached through the interface a call record names."""

    def __init__(self, record: CallRecord, hosts: HostPolicy) -> None:
        self.record = record
        self.hosts = hosts

    def _card(self) -> AgentCard:
        card = {
            "name": str(self.record.get("agent") or "agent"),
            "supportedInterfaces": [
                {
                    "url": self.record["url"],
                    "protocolBinding": self.record.get("binding", "JSONRPC"),
                    "protocolVersion": self.record.get("protocolVersion", "1.0"),
                }
            ],
            "capabilities": {"streaming": bool(self.record.get("streaming"))},
        }
        return to_proto(card, AgentCard)

    @contextlib.asynccontextmanager
    async def _client(self, *, stream: bool, until: float) -> AsyncIterator[Client]:
        """An a2a-sdk client for the agent, once its host is allowed (checked by ``until``)."""
        loop = asyncio.get_running_loop()
        check = self.hosts.check(self.record["url"])  # a clear refusal before any request
        try:
            await asyncio.wait_for(check, max(0.0, until - loop.time()))
        except TimeoutError:
            url = self.record["url"]
            raise AgentUnreachable(f"{url}: its host was not resolved in time", late=True) from None
        config = ClientConfig(
            # (httpx's timeout is per read: the deadline that holds is the caller's ``until``)
            httpx_client=http_client(self.hosts, timeout=max(1.0, until - loop.time())),
            streaming=stream,
            polling=not stream,  # returnImmediately: the task's id at once
            supported_protocol_bindings=list(w.HTTP_BINDINGS),
        )
        client = ClientFactory(config).create(self._card())
        try:
            yield client
        finally:
            await _closed(client.close())
            assert config.httpx_client is not None
            await _closed(config.httpx_client.aclose())

    async def send(
        self, msg: MessageJson, *, first_by: float, follow_until: float, keep: Keep
    ) -> TaskJson:
        """Send a message; ``keep`` each state the agent reports: on a stream when the agent
        streams (followed until ``follow_until``, a loop time, or the task stops), else its
        answer (``returnImmediately``). The first state (it names the task) must come by
        ``first_by``, else ``AgentUnreachable`` (``late``); the newest state."""
        request = to_proto({"message": msg}, SendMessageRequest)
        # A stream even when not waiting: its first event names the task at once, where an
        # agent that ignores returnImmediately (LangGraph's) would hold the answer until done.
        stream = bool(self.record.get("streaming"))
        newest: TaskJson | None = None
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            async with self._client(stream=stream, until=first_by) as client:
                events = cast(AsyncGenerator[StreamResponse], client.send_message(request))
                try:
                    while newest is None or (
                        w.task_state(newest) not in w.STOPPED and loop.time() < follow_until
                    ):
                        # Each wait ends at the call's deadline, whatever the agent sends
                        # meanwhile (headers slowly, a body a byte at a time, an endless stream)
                        until = first_by if newest is None else follow_until
                        try:
                            event = await asyncio.wait_for(
                                anext(events), max(0.0, until - loop.time())
                            )
                        except StopAsyncIteration:
                            break  # the stream ended: a check asks again
                        except TimeoutError:
                            if newest is None:
                                raise _late(self.record["url"], first_by - began) from None
                            break  # the wait is over: a check asks again
                        if event.WhichOneof("payload") is None:
                            continue  # an event this SDK does not read (LangGraph's 0.3 updates)
                        newest = snapshot_of(event, newest)
                        await keep(newest)
                finally:
                    await _closed(events.aclose())
        except AgentUnreachable:
            if newest is None:
                raise
        except Exception as exc:
            if newest is None:
                raise AgentUnreachable(_why(exc)) from None
        if newest is None:  # the agent answered nothing at all
            raise AgentUnreachable(f"{self.record['url']} answered no task")
        return newest

    async def _one(
        self, request: Callable[[Client], Awaitable[Task]], until: float | None
    ) -> TaskJson:
        """One request answered with a task (as JSON) by ``until`` (a loop time; None:
        ``REQUEST_TIMEOUT`` from now); ``AgentUnreachable`` saying why not."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        until = began + REQUEST_TIMEOUT if until is None else until
        try:
            async with self._client(stream=False, until=until) as client:
                answer = request(client)
                return task_json(await asyncio.wait_for(answer, max(0.0, until - loop.time())))
        except AgentUnreachable:
            raise
        except TimeoutError:
            raise _late(self.record["url"], until - began) from None
        except Exception as exc:
            raise AgentUnreachable(_why(exc)) from None

    async def get(self, remote_id: str, *, until: float | None = None) -> TaskJson:
        return await self._one(lambda client: client.get_task(GetTaskRequest(id=remote_id)), until)

    async def cancel(self, remote_id: str, *, until: float | None = None) -> TaskJson:
        return await self._one(
            lambda client: client.cancel_task(CancelTaskRequest(id=remote_id)), until
        )


async def fetch_card(
    url: str, hosts: HostPolicy, *, timeout: float = REQUEST_TIMEOUT
) -> CardJson:
    """The A2A card at ``url`` (a card's URL, or an agent's base URL: then its
    ``/.well-known/agent-card.json``), as JSON, read within ``timeout`` seconds in all;
    ``AgentUnreachable`` saying why not."""
    from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH

    parts = urlsplit(url)
    if not parts.path.endswith(".json"):  # a base URL: its well-known card
        path = parts.path.rstrip("/") + AGENT_CARD_WELL_KNOWN_PATH
        url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    try:  # one deadline for the whole read: a card sent a byte at a time holds nothing
        return await asyncio.wait_for(_read_card(url, hosts, timeout), timeout)
    except TimeoutError:
        raise _late(url, timeout, "sent its card") from None


async def _read_card(url: str, hosts: HostPolicy, timeout: float) -> CardJson:
    from a2a.client.card_resolver import parse_agent_card

    try:
        await hosts.check(url)
        async with http_client(hosts, timeout=timeout) as http:
            response = await http.get(url)
            if response.status_code != 200:
                raise AgentUnreachable(
                    f"{url} answered HTTP {response.status_code}", response.status_code
                )
            found = response.json()
            if not isinstance(found, dict):
                raise AgentUnreachable(f"{url} holds no A2A card (not a JSON object)")
            return json_object(parse_agent_card(found))
    except AgentUnreachable:
        raise
    except (ValueError, json.JSONDecodeError) as exc:
        raise AgentUnreachable(f"{url} holds no A2A card: {clipped(str(exc), 200)}") from None
    except Exception as exc:
        raise AgentUnreachable(_why(exc)) from None
