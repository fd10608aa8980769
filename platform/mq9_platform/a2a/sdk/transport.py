"""An a2a-sdk ``ClientTransport`` for the ``mq9`` protocol binding: any A2A client code reaches an
agent served over mq9 (``serve_agent``, or anything that speaks ``a2a/mail.py``) unchanged.

    factory = ClientFactory(ClientConfig(supported_protocol_bindings=["mq9"]))
    register_mq9(factory, mq9_client)                  # once per factory
    card = await mq9_agent_card(mq9_client, "agent.summarizer")   # from the registry
    a2a_client = factory.create(card)

Needs the ``a2a`` extra. Requests go to the interface's ``mq9://<mailbox>``, snapshots come
back in the caller's reply mailbox (named by ``reply_mailbox``, else a private one, both under
the reserved root); GetTask, ListTasks and subscribe read it, so they answer while the agent
is offline, and show this caller's tasks only (docs/a2a.md). Push notification configs go to
the agent, which POSTs each later state where its operator allows (``push_destinations``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import cast

from a2a.client.client import ClientCallContext, ClientConfig
from a2a.client.client_factory import ClientFactory
from a2a.client.errors import A2AClientTimeoutError
from a2a.client.transports.base import ClientTransport
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    SendMessageRequest,
    SendMessageResponse,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
)
from a2a.types.a2a_pb2 import Message as A2AMessage
from a2a.utils.errors import (
    InvalidAgentResponseError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)

from mq9_wire.protocol import MQ9_URL_SCHEME, Message
from mq9_wire.protocol.errors import MailboxNotFound, Mq9Error

from ...client.client import Mq9Client
from .. import mail as w
from ..arrivals import NO_ANNOUNCEMENTS, Arrivals
from ..caller import AgentCaller, CallError, CallState, _user_turns
from ..shapes import JsonObject, MessageJson, SendRequestJson, TaskJson
from ..store import events, keep, latest, tasks_in
from .protojson import json_object, request_json, to_proto

BINDING = "mq9"
# How long a blocking send or cancel waits for the task to stop when the call gives no timeout.
DEFAULT_TIMEOUT = 60.0


class Mq9Transport(ClientTransport):
    """A2A over mq9 for one agent (its mailbox), on an open ``Mq9Client``."""

    def __init__(
        self,
        client: Mq9Client,
        mailbox: str,
        *,
        reply_mailbox: str | None = None,
        card: AgentCard | None = None,
        arrivals: Arrivals | None = None,
        once_per_message: bool = False,
    ) -> None:
        self.client = client
        self.mailbox = mailbox
        # a new task's SendMessage sent again (its messageId again) is that task, sent
        # once (``AgentCaller.submit_once``): the gateway's, whose HTTP clients resend
        self.once_per_message = once_per_message
        # A task's new states are read as they arrive where ``arrivals`` hears them, else polled
        self.arrivals = arrivals or NO_ANNOUNCEMENTS
        self.card = card
        # A private reply mailbox unless named: under the reserved root, made by the first send
        self._caller = AgentCaller(client, reply_mailbox or w.CALLS_ROOT + w.new_id())
        self._asking = asyncio.Lock()  # push config requests, one at a time

    # -- SendMessage ------------------------------------------------------------------------

    async def _submit(
        self, request: SendMessageRequest, idempotency_key: str | None = None
    ) -> tuple[str, int, int, bool, int]:
        """Send the request: the task's id, how many caller turns it will have, the newest
        error answer about it before this request (the agent's answer to it comes after),
        whether it was sent before (``once_per_message``, or ``idempotency_key``: its answer
        may be there already), and the task's newest event before it."""
        caller = self._caller
        idempotency_key = key_value(idempotency_key)
        body = request_json(request)
        msg = body.get("message")
        if not isinstance(msg, dict) or not msg.get("parts"):
            raise InvalidParamsError("the request needs a message with parts")
        msg.setdefault("role", "ROLE_USER")
        if request.configuration.HasField("task_push_notification_config"):
            # The agent keeps a config only for a task it has stored: never silently dropped
            raise InvalidParamsError(
                "a push notification config inside SendMessage is not taken over mq9: send "
                "with returnImmediately, then CreateTaskPushNotificationConfig for the task"
            )
        task_id = msg.get("taskId")
        try:
            message_id = msg.get("messageId")
            if not task_id and idempotency_key:
                # (A2A #1893) the key names the request, for this caller (a tenant) alone
                try:
                    task_id, resent = await caller.submit_once(
                        self.mailbox, body, IDEMPOTENCY_ONCE + idempotency_key
                    )
                except CallError:
                    raise _key_used(idempotency_key) from None
                return task_id, 1, -1, resent, 0
            if not task_id and self.once_per_message and isinstance(message_id, str) and message_id:
                task_id, resent = await caller.submit_once(self.mailbox, body, message_id)
                return task_id, 1, -1, resent, 0
            if not task_id:
                return await caller.submit(self.mailbox, body), 1, -1, False, 0
            before, errors = await asyncio.gather(self._known(task_id), self._error_ids(task_id))
            if idempotency_key:
                return await self._follow_up_once(task_id, body, before, errors, idempotency_key)
            _check_follow_up(before, msg)  # refused here, at once: the agent would refuse too
            await caller.send_request(self.mailbox, body, w.SEND, task_id)
            turns = _user_turns(before) + 1
            return task_id, turns, max(errors, default=-1), False, w.seq_of(before)
        except CallError as exc:
            raise InvalidParamsError(str(exc)) from None

    async def _follow_up_once(
        self,
        task_id: str,
        body: SendRequestJson,
        before: TaskJson,
        errors: list[int],
        idempotency_key: str,
    ) -> tuple[str, int, int, bool, int]:
        """A message to an existing task (an answer to its question) under an
        Idempotency-Key: sent once. Its record (``keyed.<digest>`` in the reply mailbox: the
        request's digest, the turns it makes, the task's newest event before it) is kept before the
        send; the same request again under the key answers the task as it goes on (sent again
        only while the agent shows no sign of the first, the broker storing the keyed SEND
        once); another request under the key is refused."""
        named = (self.reply_mailbox, task_id, idempotency_key)
        record_key = KEYED_KEY + w.once_id("follow-up", *named)
        sent = w.digest(w.json_text(body))
        record = await latest(self.client, self.reply_mailbox, record_key)
        newest_error = max(errors, default=-1)
        if record is not None:
            turns, since = record.get("turns"), record.get("seq")
            if record.get("sent") != sent or not isinstance(turns, int):
                raise _key_used(idempotency_key)
            if _user_turns(before) < turns:  # the agent has not taken it (the send was lost?)
                await self._caller.send_request(self.mailbox, body, w.SEND, task_id, once=True)
            return task_id, turns, newest_error, True, since if isinstance(since, int) else 0
        _check_follow_up(before, body["message"])
        turns = _user_turns(before) + 1
        kept = {"taskId": task_id, "sent": sent, "turns": turns, "seq": w.seq_of(before)}
        await keep(self.client, self.reply_mailbox, record_key, kept)
        await self._caller.send_request(self.mailbox, body, w.SEND, task_id, once=True)
        return task_id, turns, newest_error, False, w.seq_of(before)

    async def _error_ids(self, task_id: str) -> list[int]:
        found = await _kept(self.client, self.reply_mailbox, (_ERROR_KEY + task_id,))
        return [m.msg_id for m in found]

    async def send_message(
        self,
        request: SendMessageRequest,
        *,
        context: ClientCallContext | None = None,
        on_sent: Callable[[str], Awaitable[None]] | None = None,
        idempotency_key: str | None = None,
    ) -> SendMessageResponse:
        """The task once it stops (or as it stands when the call's time is up, or at once with
        ``returnImmediately``); the agent's Message when it answered with one (docs/a2a.md,
        "The wire"); its refusal of the request as the A2A error it stands for. ``on_sent``:
        awaited with the task's id once the request is sent (the gateway keeps a push config
        given in the request so)."""
        mark = self.arrivals.mark()  # before the send: an answer announced meanwhile wakes
        idempotency_key = idempotency_key or _parameter(context, IDEMPOTENCY_KEY)
        task_id, turns, errors, resent, _ = await self._submit(request, idempotency_key)
        if on_sent is not None:
            await on_sent(task_id)
        newest: TaskJson | None = None
        if not request.configuration.return_immediately:
            states = self._states_after_send(task_id, context, turns, errors, mark, resent)
            async for seen in states:
                newest = seen
        snapshot = newest or await self._snapshot(task_id) or _submitted(task_id, request)
        answer = message_answer(snapshot)
        if answer is not None:
            return SendMessageResponse(message=to_proto(answer, A2AMessage))
        return SendMessageResponse(task=to_proto(snapshot, Task))

    async def send_message_streaming(
        self,
        request: SendMessageRequest,
        *,
        context: ClientCallContext | None = None,
        on_sent: Callable[[str], Awaitable[None]] | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncGenerator[StreamResponse]:
        """The submitted task (event 0 of a new task), then each event of the task
        (each numbered, none skipped: those a look missed are read from the reply mailbox)."""
        mark = self.arrivals.mark()  # before the send: an answer announced meanwhile wakes
        idempotency_key = idempotency_key or _parameter(context, IDEMPOTENCY_KEY)
        task_id, turns, errors, resent, before = await self._submit(request, idempotency_key)
        if on_sent is not None:
            await on_sent(task_id)
        if not resent:  # (a task sent before: its events from the first)
            # a new task's event 0; a follow-up's first answer, ahead of its new events
            place = {"snapshot": before} if before else {"seq": 0}
            first = placed(_submitted(task_id, request), **place)
            yield StreamResponse(task=to_proto(first, Task))
        states = self._states_after_send(task_id, context, turns, errors, mark, resent)
        async for snapshot in self._numbered(task_id, states, before):
            yield StreamResponse(task=to_proto(snapshot, Task))

    async def _numbered(
        self, task_id: str, snapshots: AsyncGenerator[TaskJson], last: int
    ) -> AsyncGenerator[TaskJson]:
        """Each event of the task after event ``last``, in order, once, placed (``placed``):
        ``snapshots`` are the newest states as looks found them; an event a look skipped (two
        kept between looks) is read from the reply mailbox; one not kept there any more is
        said, once, as a gap (the newest state with ``gap``). A state without a number (an
        agent from before events were numbered) is passed on as it is."""
        async for snapshot in snapshots:
            seq = w.seq_of(snapshot)
            if not seq:
                yield snapshot
                continue
            if seq <= last:
                continue  # seen (the state before a follow-up, or a look again)
            if seq > last + 1:
                kept = None  # (more than MAX_REPLAY behind: a gap)
                if seq - last <= MAX_REPLAY:
                    kept = await events(self.client, self.reply_mailbox, task_id, last, seq - 1)
                if kept is None:
                    yield placed(snapshot, seq=seq, gap={"after": last, "resumedAt": seq})
                    last = seq
                    continue
                for event in kept:
                    yield placed(event, seq=w.seq_of(event))
            yield placed(snapshot, seq=seq)
            last = seq

    def _states_after_send(
        self,
        task_id: str,
        context: ClientCallContext | None,
        turns: int,
        errors: int,
        since: int | None = None,
        resent: bool = False,
    ) -> AsyncGenerator[TaskJson]:
        """The task's new states from a request just sent: the first look waits for an arrival
        in the reply mailbox (or the next look's time), the agent having had no time to answer
        yet (``resent``: a request sent before looks at once, its answer may be there). A
        refusal the agent answers instead of a state (an error newer than ``errors``) raises
        at once: the send never waits out its time for an answer that came."""

        previous: TaskJson | None = None

        async def read() -> TaskJson | None:
            nonlocal previous
            snapshot = await self._snapshot(task_id)
            if snapshot is None or snapshot == previous:  # a look that found no new state
                refusal = await self._refusal(task_id, errors)
                if refusal is not None:
                    raise refusal
            previous = snapshot
            return snapshot

        return self._snapshots(read, context, turns, look_first=resent, since=since)

    async def _refusal(self, task_id: str, after: int) -> Exception | None:
        """The A2A error of the agent's answer about the task newer than ``after``, if any."""
        for msg in await _kept(self.client, self.reply_mailbox, (_ERROR_KEY + task_id,)):
            if msg.msg_id > after:
                try:
                    _answer(msg.header.get(w.HEADER_TYPE), msg.payload, w.SEND)
                except Exception as exc:  # the error it stands for
                    return exc
        return None

    async def _snapshot(self, task_id: str) -> TaskJson | None:
        """The newest state of the task, as the agent left it in the reply mailbox."""
        found = await latest(self.client, self._caller.reply_mailbox, w.TASK_KEY + task_id)
        return cast(TaskJson | None, found)  # read with care all the same (mail.task_state)

    async def _snapshots(
        self,
        read: Callable[[], Awaitable[TaskJson | None]],
        context: ClientCallContext | None,
        turns: int = 0,
        until: frozenset[str] = w.STOPPED,
        *,
        look_first: bool = True,
        since: int | None = None,
    ) -> AsyncGenerator[TaskJson]:
        """Each new snapshot ``read()`` answers until the task is in a state of ``until`` with
        ``turns`` caller turns taken (or the call's time is up); ``look_first=False``: the
        first read waits for an arrival in the reply mailbox (since ``since``, an
        ``Arrivals.mark`` taken before the request was sent), or the next look's time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _timeout(context)
        last = None
        found = False
        with self.arrivals.bell(self._caller.reply_mailbox, since=since) as bell:
            waiting = not look_first
            while True:
                if waiting:
                    left = deadline - loop.time()
                    if left <= 0:
                        return
                    await bell.wait(left, found=found)
                waiting = True
                snapshot = await read()
                found = snapshot is not None and snapshot != last
                if snapshot is not None and found:
                    last = snapshot
                    yield snapshot
                    state = w.task_state(snapshot)
                    # A rejected request is answered with no turn of the caller's in it
                    if state in until and (_user_turns(snapshot) >= turns or state == w.REJECTED):
                        return

    @property
    def reply_mailbox(self) -> str:
        """Where this caller's tasks and answers come back (its tasks are those sent from it)."""
        return self._caller.reply_mailbox

    def states(
        self,
        task_id: str,
        context: ClientCallContext | None = None,
        until: frozenset[str] = w.STOPPED,
    ) -> AsyncGenerator[TaskJson]:
        """Each new state of the task (as the agent reports it) until one of ``until``, or the
        context's timeout (the gateway's pushes follow a task so)."""
        return self._snapshots(lambda: self._snapshot(task_id), context, until=until)

    # -- tasks ------------------------------------------------------------------------------

    async def _known(self, task_id: str) -> TaskJson:
        """The newest state of a task this caller sent (``submitted`` until the agent reports);
        ``TaskNotFoundError`` if none."""
        state = await self._call(task_id)
        return state.task or w.task(task_id, state.context_id, w.SUBMITTED)

    async def _call(self, task_id: str) -> CallState:
        """Where a task this caller sent stands (one look: ``AgentCaller.check``);
        ``TaskNotFoundError`` if this caller sent none under that id."""
        try:
            return await self._caller.check(task_id)
        except CallError:
            raise TaskNotFoundError(f"task {task_id!r} not found at agent {self.mailbox}") from None

    async def get_task(
        self, request: GetTaskRequest, *, context: ClientCallContext | None = None
    ) -> Task:
        return to_proto(await self._known(request.id), Task)

    async def list_tasks(
        self, request: ListTasksRequest, *, context: ClientCallContext | None = None
    ) -> ListTasksResponse:
        # Two queries side by side, however many tasks: the call records say which tasks
        # went to this agent (not each call's state, 3 queries a task one after the other:
        # the tasks' states come in the second query)
        mine, found = await asyncio.gather(
            self._sent_here(), tasks_in(self.client, self.reply_mailbox, request.context_id)
        )
        tasks = [t for t in found if t["id"] in mine]
        return ListTasksResponse(
            tasks=[to_proto(t, Task) for t in tasks], total_size=len(tasks), page_size=len(tasks)
        )

    async def _sent_here(self) -> set[str]:
        """The ids of the tasks this caller sent to this agent, from their call records
        (``AgentCaller``'s, tagged ``w.CALL_TAG``: RobustMQ answers at most 100)."""
        try:
            records = await self.client.query(self.reply_mailbox, tags=[w.CALL_TAG])
        except MailboxNotFound:
            return set()  # no call made yet
        ids = set()
        for msg in records:
            try:
                record = msg.json()
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("mailbox") != self.mailbox:
                continue  # another agent's call, from the same reply mailbox
            if w.is_valid_id(record.get("taskId")):
                ids.add(record["taskId"])
        return ids

    async def cancel_task(
        self, request: CancelTaskRequest, *, context: ClientCallContext | None = None
    ) -> Task:
        snapshot = await self._known(request.id)
        if w.task_state(snapshot) in w.FINAL:
            raise TaskNotCancelableError(
                f"task {request.id} is {w.short_state(w.task_state(snapshot))}"
            )
        await self._caller.send_request(self.mailbox, {"id": request.id}, w.CANCEL_TASK, request.id)
        watching = self._snapshots(lambda: self._snapshot(request.id), context, until=w.FINAL)
        async for seen in watching:
            snapshot = seen
        return to_proto(snapshot, Task)

    async def subscribe(
        self,
        request: SubscribeToTaskRequest,
        *,
        context: ClientCallContext | None = None,
        after: int | None = None,
    ) -> AsyncGenerator[StreamResponse]:
        """The task as it stands at once (``submitted`` while the agent has not taken it),
        then each new event until a final one: an input-required task is followed through
        its answer. A task that ended already is refused (A2A: UnsupportedOperationError).

        ``after`` (the last event the client saw, its ``Last-Event-ID``): the task as it
        stands first (A2A 9.4; placed as a ``snapshot``, which moves no cursor), then every
        event after ``after``, in order, then each new one; a task that ended since is
        replayed to its end. A cursor older than what the reply mailbox keeps is answered
        with the task as it stands, placed with its number and a ``gap``, then new events; a
        cursor past the task's newest event is refused (InvalidParamsError). An a2a-sdk
        client over the mq9 binding gives it as its ``Last-Event-ID`` service parameter."""
        if after is None:
            after = cursor_value(_parameter(context, LAST_EVENT_ID))
        current = await self._known(request.id)
        newest = w.seq_of(current)
        ended = w.task_state(current) in w.FINAL
        if after is None:
            if ended:
                raise UnsupportedOperationError(
                    f"task {request.id} is {w.short_state(w.task_state(current))}: nothing to "
                    "subscribe to (GetTask reads it)"
                )
            yield StreamResponse(task=to_proto(placed(current, seq=newest), Task))
        else:
            if after > newest:
                raise InvalidParamsError(
                    f"Last-Event-ID {after} is past task {request.id}'s newest event "
                    f"({newest}): subscribe without it"
                )
            kept = None  # more than MAX_REPLAY events away: a gap, as if not kept
            if newest - after <= MAX_REPLAY:
                kept = await events(self.client, self.reply_mailbox, request.id, after, newest - 1)
            if kept is None:
                gap = {"after": after, "resumedAt": newest}
                yield StreamResponse(task=to_proto(placed(current, seq=newest, gap=gap), Task))
            else:
                yield StreamResponse(task=to_proto(placed(current, snapshot=newest), Task))
                if newest > after:
                    for event in [*kept, current]:
                        event = placed(event, seq=w.seq_of(event))
                        yield StreamResponse(task=to_proto(event, Task))
            if ended:
                return
        following = self._snapshots(lambda: self._snapshot(request.id), context, until=w.FINAL)
        async for snapshot in self._numbered(request.id, following, newest):
            if snapshot != current:
                yield StreamResponse(task=to_proto(snapshot, Task))

    async def get_extended_agent_card(
        self, request: GetExtendedAgentCardRequest, *, context: ClientCallContext | None = None
    ) -> AgentCard:
        if self.card is None:
            raise UnsupportedOperationError("this mq9 transport was given no card")
        return self.card

    # -- push notification configs ---------------------------------------------------------
    # The agent keeps them (its operator allows the URLs: server.py, push_destinations) and
    # POSTs each later state of the task; the result still waits in the reply mailbox too.

    async def create_task_push_notification_config(
        self, request: TaskPushNotificationConfig, *, context: ClientCallContext | None = None
    ) -> TaskPushNotificationConfig:
        answer = await self._ask(w.CREATE_PUSH, request.task_id, json_object(request), context)
        return to_proto(answer, TaskPushNotificationConfig)

    async def get_task_push_notification_config(
        self,
        request: GetTaskPushNotificationConfigRequest,
        *,
        context: ClientCallContext | None = None,
    ) -> TaskPushNotificationConfig:
        answer = await self._ask(w.GET_PUSH, request.task_id, json_object(request), context)
        return to_proto(answer, TaskPushNotificationConfig)

    async def list_task_push_notification_configs(
        self,
        request: ListTaskPushNotificationConfigsRequest,
        *,
        context: ClientCallContext | None = None,
    ) -> ListTaskPushNotificationConfigsResponse:
        answer = await self._ask(w.LIST_PUSH, request.task_id, json_object(request), context)
        return to_proto(answer, ListTaskPushNotificationConfigsResponse)

    async def delete_task_push_notification_config(
        self,
        request: DeleteTaskPushNotificationConfigRequest,
        *,
        context: ClientCallContext | None = None,
    ) -> None:
        await self._ask(w.DELETE_PUSH, request.task_id, json_object(request), context)

    async def _ask(
        self, method: str, task_id: str, body: JsonObject, context: ClientCallContext | None
    ) -> JsonObject:
        """One push config request to the agent, and its answer (a JSON object) from the
        reply mailbox. The agent keeps the answer under ``answer.<task>`` (``error.<task>``
        when it refuses): the first one newer than any there before is this request's."""
        call = await self._call(task_id)  # a task this caller sent, else TaskNotFoundError
        # The agent keeps configs for the tasks it has stored: wait until it took this one (it
        # stores a state before telling the caller), else a request overtaking the task's own
        # would find none. A state the look found already says so: no second read of it.
        if call.task is None:
            watching = self._snapshots(lambda: self._snapshot(task_id), context, until=_ANY)
            async for _ in watching:
                break
            else:
                raise A2AClientTimeoutError(
                    f"agent {self.mailbox} has not taken task {task_id} in "
                    f"{_timeout(context):g} s (offline? the task waits in its mailbox)"
                )
        reply = self._caller.reply_mailbox
        keys = (_ANSWER_KEY + task_id, _ERROR_KEY + task_id)
        async with self._asking:  # one request at a time: each answer is the one awaited
            mark = self.arrivals.mark()  # before the send: an answer announced meanwhile wakes
            before = max((m.msg_id for m in await _kept(self.client, reply, keys)), default=-1)
            try:
                await self._caller.send_request(
                    self.mailbox, {**body, "taskId": task_id}, method, task_id
                )
            except CallError as exc:
                raise InvalidParamsError(str(exc)) from None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _timeout(context)
            # Woken by the answer's arrival where the broker announces it, not a poll's time
            with self.arrivals.bell(reply, since=mark) as bell:
                while True:
                    for msg in await _kept(self.client, reply, keys):
                        if msg.msg_id > before:
                            return _answer(msg.header.get(w.HEADER_TYPE), msg.payload, method)
                    left = deadline - loop.time()
                    if left <= 0:
                        raise A2AClientTimeoutError(
                            f"agent {self.mailbox} did not answer {method} in "
                            f"{_timeout(context):g} s (offline? the request waits in its mailbox)"
                        )
                    await bell.wait(left)

    async def close(self) -> None:
        """The mq9 client belongs to whoever opened it: nothing to close here."""


_ANY = frozenset({""})  # no state stops ``_snapshots``: the first one seen is enough
_ANSWER_KEY, _ERROR_KEY = "answer.", "error."  # + task id (server.py, _answer and _error)


async def _kept(client: Mq9Client, mailbox: str, keys: tuple[str, ...]) -> list[Message]:
    """The messages kept in ``mailbox`` under each of ``keys``: the queries sent at once, so
    the lot takes one round trip and ends within the client's ``request_timeout`` (one after
    the other, within that many). The first to fail ends the read; the others are not left
    running."""

    async def under(key: str) -> list[Message]:
        try:
            return await client.query(mailbox, key=key)
        except MailboxNotFound:
            return []

    reads = [asyncio.ensure_future(under(key)) for key in keys]
    try:
        found = await asyncio.gather(*reads)
    except BaseException:
        for read in reads:
            read.cancel()
        raise
    return [msg for messages in found for msg in messages]


def _answer(kind: str | None, payload: bytes, method: str) -> JsonObject:
    """An agent's answer to a push config request, or the A2A error it stands for."""
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise InvalidAgentResponseError(f"the agent answered {method} with no JSON object")
    if kind == "Error":
        error = body.get("error")
        error = error if isinstance(error, dict) else {}
        text = str(error.get("message", ""))[:500] or "refused"
        data = error.get("data")
        coded = isinstance(data, dict) and data.get("coded") is True
        # (an agent of 0.5.0 or before wrote -32001 for every error: what it meant is not
        # told, and its words are not read)
        code = error.get("code") if coded else None
        raise _BY_CODE.get(code if isinstance(code, int) else 0, InvalidParamsError)(text)
    return body


# An agent's Error answer, by its code (mail.error_reply)
_BY_CODE = {
    w.TASK_NOT_FOUND: TaskNotFoundError,
    w.PUSH_NOT_SUPPORTED: PushNotificationNotSupportedError,
    w.UNSUPPORTED_OPERATION: UnsupportedOperationError,
}


def _check_follow_up(task: TaskJson, msg: MessageJson) -> None:
    """A message naming a task goes on with it: refused when the task ended (A2A:
    UnsupportedOperationError), or when its contextId is another than the task's."""
    state = w.task_state(task)
    if state in w.FINAL:
        raise UnsupportedOperationError(
            f"task {task['id']} is {w.short_state(state)}: it takes no more messages (send a "
            "new task, with its contextId to go on with the conversation)"
        )
    given, own = msg.get("contextId"), task.get("contextId")
    if given and own and given != own:
        raise InvalidParamsError(
            f"the message's contextId {str(given)[:80]!r} is not task {task['id']}'s: leave it "
            "out, or give the task's"
        )


def message_answer(snapshot: Mapping[str, object]) -> MessageJson | None:
    """The Message an agent answered with instead of a task (docs/a2a.md, "The wire"): the
    status message of a completed task marked ``metadata.mq9.answer: "message"``."""
    meta = snapshot.get("metadata")
    mq9 = meta.get("mq9") if isinstance(meta, dict) else None
    if not (isinstance(mq9, dict) and mq9.get("answer") == w.MESSAGE_ANSWER):
        return None
    status = snapshot.get("status")
    found = status.get("message") if isinstance(status, dict) else None
    answered = isinstance(found, dict) and w.task_state(snapshot) == w.COMPLETED
    return cast(MessageJson, found) if answered else None


IDEMPOTENCY_ONCE = "Idempotency-Key\n"  # what a key names, apart from any messageId
# What a client sends beside a request (an HTTP header, gRPC call metadata, an a2a-sdk
# client's ClientCallContext.service_parameters), named so in the gateway's card
LAST_EVENT_ID = "Last-Event-ID"
IDEMPOTENCY_KEY = "Idempotency-Key"
MAX_KEY_CHARS = 255  # an Idempotency-Key: 1 to 255 visible ASCII characters
MAX_CURSOR = 2**53  # a cursor is an event number: a JSON-safe integer
# The most events one resubscribe replays (each a read of the reply mailbox): a cursor further
# behind is answered as one whose events are no longer kept (the task and a said gap)
MAX_REPLAY = 1000


KEYED_KEY = "keyed."  # + a digest: a follow-up message sent under an Idempotency-Key


def _key_used(key: str) -> InvalidParamsError:
    return InvalidParamsError(
        f"Idempotency-Key {key[:80]!r} was used before with another request: a new request "
        "needs a new key"
    )


def _parameter(context: ClientCallContext | None, name: str) -> str | None:
    """A service parameter of an a2a-sdk client's call, by name (any case)."""
    given = (context.service_parameters if context is not None else None) or {}
    for key, value in given.items():
        if key.lower() == name.lower():
            return str(value)
    return None


def cursor_value(value: str | None) -> int | None:
    """A ``Last-Event-ID``'s event number (None: none given); InvalidParamsError for one that
    is no such number."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or int(text) > MAX_CURSOR:
        raise InvalidParamsError(
            f"{LAST_EVENT_ID} {text[:40]!r}: the number of an event (its SSE id, or its "
            f"metadata's {w.RESUME_EXTENSION} seq)"
        )
    return int(text)


def key_value(value: str | None) -> str | None:
    """An ``Idempotency-Key`` (None: none given); InvalidParamsError for one that is not 1 to
    255 visible ASCII characters."""
    if value is None:
        return None
    if not 0 < len(value) <= MAX_KEY_CHARS or not all(33 <= ord(c) <= 126 for c in value):
        raise InvalidParamsError(
            f"{IDEMPOTENCY_KEY}: 1 to {MAX_KEY_CHARS} visible ASCII characters"
        )
    return value


def placed(state: TaskJson, /, **place: object) -> TaskJson:
    """A task state with its place among the task's events, public, under
    ``metadata[RESUME_EXTENSION]``: ``seq`` (the event's number: a client's cursor, its SSE
    ``id``), or ``snapshot`` (the task as it stands at that number, ahead of a replay: moves
    no cursor), and ``gap`` where events were lost to the client (``after``, ``resumedAt``)."""
    meta = dict(state.get("metadata") or {})
    meta[w.RESUME_EXTENSION] = cast(JsonObject, place)
    return cast(TaskJson, {**state, "metadata": meta})


def _timeout(context: ClientCallContext | None) -> float:
    return context.timeout if context is not None and context.timeout else DEFAULT_TIMEOUT


def _submitted(task_id: str, request: SendMessageRequest) -> TaskJson:
    return w.task(task_id, request.message.context_id, w.SUBMITTED)


def register_mq9(
    factory: ClientFactory, client: Mq9Client, *, reply_mailbox: str | None = None
) -> None:
    """Teach ``factory`` the ``mq9`` protocol binding: a card whose interface is
    ``mq9://<mailbox>`` gets an ``Mq9Transport`` over ``client``. The factory's
    ``ClientConfig.supported_protocol_bindings`` must name ``"mq9"``."""

    def produce(card: AgentCard, url: str, config: ClientConfig) -> ClientTransport:
        if not url.startswith(MQ9_URL_SCHEME):
            raise ValueError(f"an mq9 interface's url is mq9://<mailbox>, not {url!r}")
        mailbox = url[len(MQ9_URL_SCHEME) :]
        return Mq9Transport(client, mailbox, reply_mailbox=reply_mailbox, card=card)

    factory.register(BINDING, produce)


async def mq9_agent_card(client: Mq9Client, name: str) -> AgentCard:
    """The A2A card the registry holds for agent ``name`` (``LookupError`` if none)."""
    try:
        agents = await client.agent_discover()
    except Mq9Error as exc:
        raise LookupError(f"the registry cannot be listed: {exc}") from None
    for agent in agents:  # normalized: the card's fields, name and mailbox
        if agent.get("name") == name:
            card = {k: v for k, v in agent.items() if k != "mailbox"}
            return to_proto(card, AgentCard)
    raise LookupError(f"no agent named {name!r} in the registry")
