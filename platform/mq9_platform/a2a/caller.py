"""``AgentCaller``: calls to A2A agents over mq9, that survive the callee being offline and the
caller restarting.

A call leaves an A2A SendMessage in the agent's mailbox (``mail``), and its record
``call.{id}`` (agent, mailbox, request) in the caller's reply mailbox, where the agent leaves
each state of the task under ``task.{id}``: a restarted caller of the same name lists its
calls and picks up their results. The reply mailbox lives under the reserved root ``mq9``
(``mail.caller_address``), so no agent holding the tools can read it or plant a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeGuard, cast

from mq9_wire.protocol import Priority, check_address, clipped
from mq9_wire.protocol.errors import MailboxNotFound, TooLarge

from .._http.hosts import HostPolicy
from ..client.client import Mq9Client
from . import mail as w
from .arrivals import Arrivals, Bell
from .shapes import (
    CallRecord,
    CallView,
    CardJson,
    ErrorReply,
    MessageJson,
    SendRequestJson,
    TaskJson,
)
from .store import ensure_mailbox, keep, keyed, latest

# How often a waiting check asks an HTTP agent again (GetTask), where a mailbox is read each
# POLL_SECONDS: each look is a request the agent's server answers.
HTTP_POLL_SECONDS = 0.5
# Where the agent leaves its refusal of a request about a task (mail.py's answer keys)
ERROR_KEY = "error."

if TYPE_CHECKING:
    from .http.caller import HttpAgent

StateListener = Callable[["CallState"], Awaitable[None]]


class CallError(Exception):
    """A call the caller cannot make or find, in words that say what to do."""


class CallNotFound(CallError):
    """No call of this caller has that task id (none was made, or it is no task id):
    what a command line reads as "not found", by the class, never the words."""


@dataclass
class CallState:
    """Where a call stands: the task's state and, when it has one, its result, question or
    error, as the caller's reply mailbox holds them."""

    task_id: str
    agent: str
    mailbox: str
    state: str  # A2A's JSON state name, e.g. TASK_STATE_COMPLETED
    context_id: str = ""
    task: TaskJson | None = None  # the newest Task snapshot, if the agent sent one
    answer_pending: bool = False  # an answer was sent and the agent has not taken it yet
    cancel_pending: bool = False
    agent_error: str | None = None
    transport: str = "mq9"  # or "http": an HTTP A2A agent (http/caller.py)

    @property
    def stopped(self) -> bool:
        """Final, or waiting for the caller (input-required with no answer on its way)."""
        if self.state == w.INPUT_REQUIRED:
            return not self.answer_pending
        return self.state in w.FINAL

    def view(self) -> CallView:
        """What a tool shows: short state names, the result or the agent's words."""
        shown: CallView = {
            "task_id": self.task_id,
            "agent": self.agent,
            "state": w.short_state(self.state),
            "context_id": self.context_id,
        }
        snapshot: Mapping[str, object] = self.task or {}
        if self.state == w.COMPLETED:
            shown["result"] = w.result_text(snapshot)
        elif self.state == w.INPUT_REQUIRED:
            shown["question"] = w.status_text(snapshot)
        elif self.state in (w.FAILED, w.REJECTED, w.CANCELED) and w.status_text(snapshot):
            shown["reason"] = w.status_text(snapshot)
        if self.agent_error and "reason" not in shown:  # the agent refused a request of ours
            shown["reason"] = self.agent_error
        if self.answer_pending:
            shown["answer_pending"] = True
        if self.cancel_pending and self.state not in w.FINAL:
            shown["cancel_pending"] = True
        return shown


class AgentCaller:
    """Calls from one caller, whose replies and records live in its reply mailbox: the one
    ``reply_mailbox`` names (``mail.caller_address``: a mailbox under the reserved root
    ``mq9`` derived from it; give the same name to a restarted caller to find its calls).

    >>> caller = await AgentCaller(client, "agent.me.calls").open()
    >>> state = await caller.call("agent.summarizer", "Summarize: ...", wait=30)
    >>> state.state, state.view().get("result")
    """

    def __init__(
        self, client: Mq9Client, reply_mailbox: str, *, hosts: HostPolicy | None = None
    ) -> None:
        self.client = client
        self.reply_mailbox = w.caller_address(check_address(reply_mailbox))
        # Where calls to HTTP A2A agents may go: the operator's allow-list (hosts.py)
        self.hosts = hosts if hosts is not None else HostPolicy.from_env()
        self._opened = False  # the reply mailbox is known to be there

    async def open(self) -> AgentCaller:
        """Create the reply mailbox (never expiring) unless it is there. Optional: the first
        call creates it, and reading calls creates nothing."""
        await ensure_mailbox(self.client, self.reply_mailbox)
        self._opened = True
        return self

    # -- the calls ---------------------------------------------------------------------------

    async def call(
        self,
        mailbox: str,
        text: str,
        *,
        agent: str | None = None,
        context_id: str | None = None,
        wait: float = 0,
        on_state: StateListener | None = None,
        once: str | None = None,
    ) -> CallState:
        """Send ``text`` to the agent at ``mailbox`` as a new task; wait up to ``wait``
        seconds for it to stop. An agent that is offline answers later: the state is then
        ``submitted``, and ``check`` picks the result up. ``once``: a key of the call (a tool
        call's): the same call again is the same task, sent once (``submit_once``)."""
        if not isinstance(text, str) or not text.strip():
            raise CallError("the task text is empty: say what the agent should do")
        if once:
            message_id = w.once_id("message", self.reply_mailbox, mailbox, once)
            msg = w.message(text, context_id=context_id or "", message_id=message_id)
            task_id, _ = await self.submit_once(mailbox, w.send_request(msg), once, agent=agent)
            return await self.check(task_id, wait=wait, on_state=on_state)
        context_id = context_id or w.new_id()
        request = w.send_request(w.message(text, context_id=context_id))
        task_id = await self.submit(mailbox, request, agent=agent)
        return await self.check(task_id, wait=wait, on_state=on_state)

    async def submit(
        self, mailbox: str, request: SendRequestJson, *, agent: str | None = None
    ) -> str:
        """Leave an A2A SendMessageRequest (a new task) in the agent's mailbox, with its record
        in the reply mailbox; returns the task id."""
        check_address(mailbox)
        task_id = w.new_id()
        msg = request["message"]
        msg.setdefault("contextId", w.new_id())
        record = self._new_record(task_id, agent, mailbox, msg)
        await self._record_and_send_or_fail(record, mailbox, request)
        return task_id

    async def submit_once(
        self, mailbox: str, request: SendRequestJson, once: str, *, agent: str | None = None
    ) -> tuple[str, bool]:
        """``submit`` for a request that may come again (an A2A client resending a
        SendMessage whose answer it lost, a tool call run again): ``once`` (its messageId, a
        tool call's key) names the task with this reply mailbox and the agent's, so the same
        request again is the same task, sent once. Returns the task's id and whether it was
        sent before. The same ``once`` with another request is refused (``CallError``)."""
        check_address(mailbox)
        task_id = w.once_id("task", self.reply_mailbox, mailbox, once)
        msg = request["message"]
        if not msg.get("contextId"):  # the same context each time, as the same task
            msg["contextId"] = w.once_id("context", self.reply_mailbox, mailbox, once)
        sent = w.digest(w.json_text(request))
        try:
            record = await self._read_record(task_id)
        except MailboxNotFound:
            record = None
        if record is None:
            record = self._new_record(task_id, agent, mailbox, msg)
            record["sent"] = sent
            await self._record_and_send_or_fail(record, mailbox, request, once=True)
            return task_id, False
        if record.get("sent") != sent:
            raise CallError(
                f"message {clipped(once, 80)!r} was sent before with another request: a new "
                "message needs a new messageId"
            )
        # Sent before: sent again only while the agent has left no state of it (the first
        # send may have been lost); the broker stores the same keyed SEND once
        if await latest(self.client, self.reply_mailbox, w.TASK_KEY + task_id) is None:
            await self.send_request(mailbox, request, w.SEND, task_id, once=True)
        return task_id, True

    def _new_record(
        self, task_id: str, agent: str | None, mailbox: str, msg: MessageJson
    ) -> CallRecord:
        return {
            "taskId": task_id,
            "agent": agent or mailbox,
            "mailbox": mailbox,
            "contextId": msg["contextId"],
            "request": w.parts_text(msg.get("parts"))[:2000],
        }

    async def _record_and_send_or_fail(
        self, record: CallRecord, mailbox: str, request: SendRequestJson, *, once: bool = False
    ) -> None:
        """``_record_and_send``; a request larger than the broker carries ends the call there,
        saying so in words (``CallError``), its task kept as failed: it never reached the agent."""
        try:
            await self._record_and_send(record, mailbox, request, once=once)
        except TooLarge as exc:
            why = f"the request is {exc.size or 'too many'} bytes, more than the broker carries"
            why += f" ({exc.limit}): send less, or a reference to the data"
            failed = w.task(record["taskId"], record["contextId"], w.FAILED, status_text=why)
            await self._keep_task(failed)
            raise CallError(why) from None

    async def _record_and_send(
        self, record: CallRecord, mailbox: str, request: SendRequestJson, *, once: bool = False
    ) -> None:
        """The call's record, then its request. The record goes first (a caller that dies right
        after the send still finds its call); once the reply mailbox is known to be there, the
        request follows it on the wire without waiting for its answer (the agent's answer has
        a mailbox to go to)."""
        task_id = record["taskId"]
        spend = getattr(self.client, "spend_keys", None)
        if once and callable(spend):  # both keys from a caller's share, or neither:
            # a share with room for one would store the request and refuse its record
            record_key = "a2a." + w.CALL_KEY + task_id
            spend([(self.reply_mailbox, record_key), *_request_key(mailbox, request, task_id)])

        def write() -> Awaitable[None]:
            return self._write_record(record, once=True) if once else self._write_record(record)

        if not self._opened:
            try:
                await write()
            except MailboxNotFound:  # the first call: only a call creates the reply mailbox
                await self.open()
                await write()
            await self.send_request(mailbox, request, w.SEND, task_id, once=once)
            return
        kept, sent = await asyncio.gather(
            write(),
            self.send_request(mailbox, request, w.SEND, task_id, once=once),
            return_exceptions=True,
        )
        if isinstance(sent, BaseException):
            raise sent  # as if sent alone: the record stands, as it did before a failed send
        if isinstance(kept, BaseException):
            if isinstance(kept, MailboxNotFound):  # deleted since: made again
                await self.open()
            await write()  # the request is out: its record must be kept

    async def call_http(
        self,
        card: CardJson,
        text: str,
        *,
        agent: str | None = None,
        context_id: str | None = None,
        wait: float = 0,
        on_state: StateListener | None = None,
    ) -> CallState:
        """``call`` for an HTTP A2A agent: ``card`` is its A2A card (JSON; from the registry
        or its well-known URL). The call is kept as a call over mq9 is: ``check``,
        ``answer``, ``cancel`` and ``calls`` take its task id; an agent that cannot be reached
        leaves the task ``failed`` saying why."""
        from .http.caller import HttpAgent

        if not isinstance(text, str) or not text.strip():
            raise CallError("the task text is empty: say what the agent should do")
        interface = w.http_interface(card)
        if interface is None:
            raise CallError("the agent's card names no HTTP A2A interface (JSONRPC, HTTP+JSON)")
        capabilities = card.get("capabilities")
        # A UUID: LangGraph's Agent Server takes a context id as its thread id, a UUID only.
        task_id, context_id = w.new_id(), context_id or str(uuid.uuid4())
        record: CallRecord = {
            "taskId": task_id,
            "agent": agent or str(card.get("name") or interface["url"]),
            "mailbox": "",
            "transport": "http",
            "url": interface["url"],
            "binding": interface["protocolBinding"],
            "protocolVersion": interface["protocolVersion"],
            "streaming": isinstance(capabilities, dict) and capabilities.get("streaming") is True,
            "contextId": context_id,
            "request": text[:2000],
        }
        try:
            await self._write_record(record)
        except MailboxNotFound:
            await self.open()
            await self._write_record(record)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait)
        await self._http_send(
            HttpAgent(record, self.hosts), record, w.message(text, context_id=context_id), wait
        )
        # (the send kept the newest state: no GetTask unless there is time left to wait)
        return await self._check(task_id, deadline, on_state, ask_first=False)

    async def _http_send(
        self, agent: HttpAgent, record: CallRecord, msg: MessageJson, wait: float
    ) -> None:
        """Send ``msg`` to an HTTP agent, keeping each state it reports under our task id, for
        ``wait`` seconds in all whatever the agent sends (0: until its first state, within
        ``REQUEST_TIMEOUT``). An agent that names no task by then leaves the task failed."""
        from .http.caller import REQUEST_TIMEOUT, AgentUnreachable, kept

        task_id = record["taskId"]

        async def keep_state(remote: TaskJson) -> None:
            if not record.get("remoteTaskId") and _remote_id(remote.get("id")):
                record["remoteTaskId"] = remote["id"]
                if isinstance(remote.get("contextId"), str) and remote["contextId"]:
                    record["contextId"] = remote["contextId"]
                await self._write_record(record)
            await self._keep_task(kept(remote, task_id))

        now = asyncio.get_running_loop().time()
        follow_until = now + max(0.0, wait)
        first_by = follow_until if wait > 0 else now + REQUEST_TIMEOUT
        try:
            await agent.send(msg, first_by=first_by, follow_until=follow_until, keep=keep_state)
        except AgentUnreachable as exc:
            if record.get("remoteTaskId"):  # an answer: the task stands as it was
                await self._keep_error(task_id, f"the answer did not reach the agent: {exc}")
                return
            failed = w.task(
                task_id,
                record["contextId"],
                w.FAILED,
                status_text=f"the agent at {record['url']} could not be reached: {exc}",
            )
            await self._keep_task(failed)

    async def _http_refresh(self, record: CallRecord, deadline: float) -> None:
        """Ask an HTTP agent where its task stands (GetTask) and keep the answer: by
        ``deadline`` (a loop time: the waiting call's) when it is ahead, else within
        ``REQUEST_TIMEOUT``. An answer cut by the caller's own deadline is no error of the
        agent's: the call returns the task as it stood."""
        from .http.caller import REQUEST_TIMEOUT, AgentUnreachable, HttpAgent, kept

        remote_id = record.get("remoteTaskId")
        if not _remote_id(remote_id):
            return  # the agent never named its task: the call failed when sent
        now = asyncio.get_running_loop().time()
        ours = now < deadline < now + REQUEST_TIMEOUT  # the caller's wait ends first
        until = deadline if ours else now + REQUEST_TIMEOUT
        try:
            remote = await HttpAgent(record, self.hosts).get(remote_id, until=until)
        except AgentUnreachable as exc:
            if not (exc.late and ours):
                await self._keep_error(record["taskId"], f"the agent could not be asked: {exc}")
            return
        await self._keep_task(kept(remote, record["taskId"]))

    async def _keep_task(self, snapshot: TaskJson) -> None:
        from .store import deliver

        await deliver(self.client, self.reply_mailbox, snapshot)

    async def _keep_error(self, task_id: str, text: str) -> None:
        body: ErrorReply = {"error": {"code": -32001, "message": text}, "taskId": task_id}
        await keep(self.client, self.reply_mailbox, ERROR_KEY + task_id, body)

    async def answer(
        self,
        task_id: str,
        text: str,
        *,
        wait: float = 0,
        on_state: StateListener | None = None,
        allow: Callable[[str], None] | None = None,
        once: str | None = None,
    ) -> CallState:
        """Answer an input-required task; the agent resumes it with the answer. ``allow`` is
        called with the agent's mailbox before anything is sent (a tool's policy: it raises
        to refuse). ``once``: a key of the answer (a tool call's): the same answer sent
        again, after the first was taken, is refused as the task now asks nothing; before,
        it is stored once."""
        current = await self.check(task_id)
        if current.state != w.INPUT_REQUIRED or current.answer_pending:
            why = f"it is {w.short_state(current.state)}"
            if current.answer_pending:
                why = "an answer is on its way already"
            raise CallError(
                f"task {task_id} takes no answer now: {why}; only an input-required task does"
            )
        if not isinstance(text, str) or not text.strip():
            raise CallError("the answer is empty")
        record = await self._record(task_id)
        if record.get("transport") == "http":
            from .http.caller import HttpAgent

            msg = w.message(text, context_id=record["contextId"], task_id=record["remoteTaskId"])
            # Until the agent says otherwise, the question is answered: not ours to answer again
            working = {**(current.task or {}), "status": {"state": w.WORKING}}
            await self._keep_task(cast(TaskJson, working))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max(0.0, wait)
            await self._http_send(HttpAgent(record, self.hosts), record, msg, wait)
            return await self._check(task_id, deadline, on_state, ask_first=False)
        _allowed(record, allow)
        # Answers sent so far: the agent's history holds the request and each answer it took.
        record["answered"] = _user_turns(current.task)
        await self._write_record(record)
        message_id = w.once_id("answer", self.reply_mailbox, task_id, once) if once else ""
        msg = w.message(
            text, context_id=record["contextId"], task_id=task_id, message_id=message_id
        )
        sent = w.send_request(msg)
        await self.send_request(record["mailbox"], sent, w.SEND, task_id, once=bool(once))
        return await self.check(task_id, wait=wait, on_state=on_state)

    async def cancel(
        self, task_id: str, *, wait: float = 0, allow: Callable[[str], None] | None = None
    ) -> CallState:
        """Ask the agent to cancel the task (critical priority, read before other work). An
        agent that is offline cancels it when it starts, before running it. ``allow`` as for
        ``answer``."""
        current = await self.check(task_id)
        if current.state in w.FINAL:
            return current
        record = await self._record(task_id)
        if record.get("transport") == "http":
            return await self._http_cancel(record, wait)
        _allowed(record, allow)
        record["cancel"] = True
        await self._write_record(record)
        await self.send_request(record["mailbox"], {"id": task_id}, w.CANCEL_TASK, task_id)
        return await self.check(task_id, wait=wait, final_only=True)

    async def _http_cancel(self, record: CallRecord, wait: float) -> CallState:
        from .http.caller import REQUEST_TIMEOUT, AgentUnreachable, HttpAgent, kept

        task_id = record["taskId"]
        if not _remote_id(record.get("remoteTaskId")):
            return await self.check(task_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait)
        until = deadline if wait > 0 else loop.time() + REQUEST_TIMEOUT  # the whole cancel
        try:
            remote = await HttpAgent(record, self.hosts).cancel(record["remoteTaskId"], until=until)
            await self._keep_task(kept(remote, task_id))
        except AgentUnreachable as exc:
            await self._keep_error(task_id, f"the agent did not cancel the task: {exc}")
            return await self._check(task_id, deadline, None, ask_first=False)
        return await self._check(task_id, deadline, None, final_only=True, ask_first=False)

    async def check(
        self,
        task_id: str,
        *,
        wait: float = 0,
        on_state: StateListener | None = None,
        final_only: bool = False,
    ) -> CallState:
        """The call's state; with ``wait``, looks again until it stops (or the wait ends): a
        call over mq9 at each arrival in the reply mailbox where the broker announces them
        (arrivals.py), else every ``POLL_SECONDS``; a call to an HTTP agent every
        ``HTTP_POLL_SECONDS``, each GetTask ending by the wait's end (``wait`` is the whole
        check, however slowly the agent answers)."""
        loop = asyncio.get_running_loop()
        return await self._check(task_id, loop.time() + max(0.0, wait), on_state, final_only)

    async def _check(
        self,
        task_id: str,
        deadline: float,
        on_state: StateListener | None,
        final_only: bool = False,
        *,
        ask_first: bool = True,
    ) -> CallState:
        """``check`` until ``deadline`` (a loop time); ``ask_first=False``: an HTTP agent is
        not asked at the first look (its state was just kept)."""
        loop = asyncio.get_running_loop()
        seen: tuple[str, bool] | None = None
        listening: Arrivals | None = None
        ask = ask_first
        try:
            with contextlib.ExitStack() as hung:
                bell: Bell | None = None
                if deadline > loop.time():
                    # Listening before the first look: an answer stored after that look is
                    # announced to us, one stored before it is found by it
                    listening = await Arrivals(self.client, [self.reply_mailbox]).start()
                    bell = hung.enter_context(listening.bell(self.reply_mailbox))
                while True:
                    state = await self._state(task_id)
                    if state.transport == "http" and state.state not in w.FINAL and ask:
                        await self._http_refresh(await self._record(task_id), deadline)
                        state = await self._state(task_id)
                    ask = True
                    changed = (state.state, state.answer_pending) != seen
                    seen = (state.state, state.answer_pending)
                    if on_state is not None and changed:
                        await on_state(state)
                    done = state.state in w.FINAL if final_only else state.stopped
                    left = deadline - loop.time()
                    if done or left <= 0:
                        return state
                    if state.transport == "http" or bell is None:
                        await asyncio.sleep(min(HTTP_POLL_SECONDS, left))
                        continue
                    await bell.wait(left, found=changed)
        finally:
            if listening is not None:
                await listening.stop()

    async def calls(self) -> list[CallState]:
        """Every call kept in the reply mailbox (RobustMQ answers at most 100), oldest first."""
        try:
            found = await self.client.query(self.reply_mailbox, tags=[w.CALL_TAG])
        except MailboxNotFound:
            return []  # no call made yet
        ids = []
        for msg in found:
            try:
                record = msg.json()
            except ValueError:
                continue
            if isinstance(record, dict) and w.is_valid_id(record.get("taskId")):
                ids.append(record["taskId"])
        return [await self._state(task_id) for task_id in dict.fromkeys(ids)]

    # -- reading and writing the records ------------------------------------------------------

    async def _record(self, task_id: str) -> CallRecord:
        _check_id(task_id)
        return self._found(task_id, await self._read_record(task_id))

    # The reply mailbox is under the reserved root: only this caller writes its records, and
    # only the agents it called the states and errors (docs/security.md, "Agent calls").

    async def _read_record(self, task_id: str) -> CallRecord | None:
        record = await latest(self.client, self.reply_mailbox, w.CALL_KEY + task_id)
        return cast(CallRecord | None, record)

    def _found(self, task_id: str, record: CallRecord | None) -> CallRecord:
        if record is None:
            raise CallNotFound(
                f"no call with task id {task_id} from this caller (reply mailbox "
                f"{self.reply_mailbox}): list_calls shows yours"
            )
        return record

    async def _read_call(
        self, task_id: str
    ) -> tuple[CallRecord, TaskJson | None, ErrorReply | None]:
        """The call's record, its newest task snapshot and its newest error, asked for at once:
        none of the three depends on another, so a look costs one round trip where it cost
        three, and has one deadline: each query is sent at the same moment with the client's
        ``request_timeout``, so the lot ends within it (one after the other, within three). The
        first to fail ends the look; the others are not left running."""
        _check_id(task_id)
        reads = [
            asyncio.ensure_future(latest(self.client, self.reply_mailbox, key + task_id))
            for key in (w.CALL_KEY, w.TASK_KEY, ERROR_KEY)
        ]
        try:
            record, snapshot, error = await asyncio.gather(*reads)
        except BaseException:
            for read in reads:
                read.cancel()
            raise
        found = self._found(task_id, cast(CallRecord | None, record))
        return found, cast(TaskJson | None, snapshot), cast(ErrorReply | None, error)

    async def _write_record(self, record: CallRecord, *, once: bool = False) -> None:
        """Keep the call's record; ``once``: its first one, stored once however often sent
        (a request sent again never writes over what became of its call since)."""
        key = w.CALL_KEY + record["taskId"]
        idempotency_key = f"a2a.{key}" if once else None
        await keep(
            self.client,
            self.reply_mailbox,
            key,
            record,
            tags=[w.CALL_TAG],
            idempotency_key=idempotency_key,
        )
        self._opened = True

    async def _state(self, task_id: str) -> CallState:
        record, snapshot, error = await self._read_call(task_id)
        state = w.task_state(snapshot) if snapshot else w.SUBMITTED
        answered = int(record.get("answered", 0) or 0)
        return CallState(
            task_id=task_id,
            agent=str(record.get("agent", "")),
            mailbox=str(record.get("mailbox", "")),
            state=state,
            context_id=str(record.get("contextId", "")),
            task=snapshot,
            # (an HTTP agent's answer is kept as it comes: its state says where it stands)
            answer_pending=record.get("transport") != "http"
            and answered > _user_turns(snapshot) - 1
            and state == w.INPUT_REQUIRED,
            cancel_pending=bool(record.get("cancel")),
            agent_error=_error_text(error),
            transport="http" if record.get("transport") == "http" else "mq9",
        )

    async def send_request(
        self,
        mailbox: str,
        body: Mapping[str, object],
        method: str,
        task_id: str,
        *,
        once: bool = False,
    ) -> None:
        """Put one A2A request (``method``, about task ``task_id``) into an agent's
        ``mailbox``, its answer to come to this caller's reply mailbox; a cancel goes first in
        the agent's queue. ``once``: keyed by the request's own messageId, so the same
        request sent again is stored once. Public because the a2a-sdk transport
        (``sdk/transport.py``) sends its requests through the caller too, so both say the same of
        a mailbox never served."""
        headers = {
            w.HEADER_METHOD: method,
            w.HEADER_REPLY_TO: self.reply_mailbox,
            w.HEADER_TASK_ID: task_id,
        }
        # A cancel overtakes queued work: the agent reads critical messages first.
        priority = Priority.CRITICAL if method == w.CANCEL_TASK else Priority.NORMAL
        named = _request_key(mailbox, body, task_id, method) if once else []
        key = named[0][1] if named else None
        try:
            await self.client.send(
                mailbox,
                w.json_text(body),
                headers=headers,
                priority=priority,
                **keyed(self.client, key),
            )
        except MailboxNotFound:
            raise CallError(
                f"no mailbox {mailbox}: the agent has never been served there (find it "
                "with agent_discover)"
            ) from None


def _request_key(
    mailbox: str, body: Mapping[str, object], task_id: str, method: str = w.SEND
) -> list[tuple[str, str]]:
    """The key a request sent once goes under (its own messageId's digest, as a messageId
    may be long), as (mailbox, key); [] when the request names no messageId."""
    msg = body.get("message")
    message_id = msg.get("messageId") if isinstance(msg, dict) else None
    if not isinstance(message_id, str):
        return []
    return [(mailbox, "a2a." + w.once_id(method, task_id, message_id))]


def _remote_id(value: object) -> TypeGuard[str]:
    """An HTTP agent's task id as we keep it (in a record, never a key: any text of a sane
    length; LangGraph's hold a ':')."""
    return isinstance(value, str) and 0 < len(value) <= 256 and value.isprintable()


def _check_id(task_id: str) -> None:
    if not w.is_valid_id(task_id):
        raise CallNotFound(f"{task_id[:80]!r} is no task id: list_calls shows yours")


def _allowed(record: CallRecord, allow: Callable[[str], None] | None) -> None:
    mailbox = record.get("mailbox")
    if not isinstance(mailbox, str):
        raise CallError(f"the record of call {record.get('taskId')} names no agent mailbox")
    if allow is not None:
        allow(mailbox)


def _user_turns(snapshot: TaskJson | None) -> int:
    """How many caller messages the agent has taken into the task (the request, answers)."""
    history = snapshot.get("history") if snapshot else None
    return sum(
        1
        for m in (history if isinstance(history, list) else ())
        if isinstance(m, dict) and m.get("role") == "ROLE_USER"
    )


def _error_text(error: Mapping[str, object] | None) -> str | None:
    detail = (error or {}).get("error")
    text = detail.get("message") if isinstance(detail, dict) else None
    return text if isinstance(text, str) else None
