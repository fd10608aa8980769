"""``serve_agent``: a runnable-like object (anything with ``async ainvoke(input, config)``) as an
A2A agent reachable through its mq9 mailbox, for callers that may be offline when it answers
(docs/a2a.md, "Serve a graph"). A LangGraph graph is served by ``langchain_mq9``'s
``serve_agent`` (``langchain_mq9/serving.py``), this server with LangGraph's defaults.

Replicas read the mailbox as one consumer group, each with a worker name (``GroupReader``).
A request is marked done only when its task stops (final, or input-required), so a task runs
AT LEAST once; one that reached a final state is not run again (its snapshot is resent), and a
broker that fails a step is waited out, never answered by running it again. A task
belongs to who sent it (``store.Asker``: the agent a ``--credentials`` broker vouches for in
``mq9-sender``, and the reply mailbox it named; docs/a2a.md, "The wire"): where the broker
vouches, a task id is its owner's alone (``Asker.scope``), so another's task under the same id
is a task apart, which neither blocks nor sees the first. Each turn is run with the config
``{"configurable": {"thread_id": ...}}``, a thread id made of its ``contextId`` and that owner;
a result holding ``__interrupt__`` makes it input-required, and the owner's answer is run as
``to_resume(<answer text>)`` (a server given no ``to_resume`` fails such a task, saying so).
Which handler answers each A2A method is one table, ``ANSWERS``, at the end of this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Self, TypedDict, TypeVar, Unpack

from mq9_wire.protocol import HEADER_SENDER, Message, card_skills, clipped
from mq9_wire.protocol.errors import Mq9Error, TooLarge

from .. import tracing
from ..client.client import Mq9Client
from ..groups.reader import GroupReader
from ..wake.deliver import Deliverer, Destinations, Refused, push_headers
from . import mail as w
from .arrivals import Arrivals, Bell
from .push_auth import PUSH_JWT_EXTENSION, PushSigner
from .shapes import ArtifactJson, CardJson, JsonObject, MessageJson, TaskJson
from .store import Asker, TaskStore, deliver, ensure_mailbox, log_event

T = TypeVar("T")
# A task as this server tells tasks apart: its owner's part of the store (``Asker.scope``: None
# where nothing vouches, all askers sharing one id space) and its id.
Slot = tuple[str | None, str]

log = logging.getLogger("mq9_platform.a2a")

# How often a running task's cancel record is looked for (a cancel handled by another replica).
CANCEL_POLL_SECONDS = 0.5
# Requests a server holds beyond those it runs (waiting for a slot, or quick ones like a
# cancel, read critical first). Few: a held request's lease runs while it waits, and the group
# has no lease renewal, so a request waiting past its lease could be run by another replica.
HELD_EXTRA = 2
# How long one wait for new requests lasts at most before the loop looks at its own state
# again (a wait ends sooner at an arrival the broker announces, or at its next poll: arrivals.py).
FETCH_WAIT_MS = 500
# How long a run may take before its task is reported ``working``: a run that ends sooner
# reports its end only (the ``working`` state would cost the store's write and the caller's, and
# a look of the caller's at it), a longer one shows ``working`` this much later. A graph's run
# takes many loop turns even when it answers at once, so no fixed number of turns tells.
WORKING_AFTER = 0.1
# How long a task's events stay in its caller's reply mailbox for a stream to be replayed
# from; the newest state stays as long as the mailbox. 0: as long as the mailbox.
EVENT_TTL = 24 * 3600


def backoff(attempt: int) -> float:
    """Seconds before a broker step that failed is tried again (attempt 0, 1, ...): growing to
    10 s, and tried for as long as the broker is away (an outage delays a task, never loses
    it). ``AgentServer(retry_delay=...)`` sets another schedule."""
    return min(0.2 * 2.0 ** min(attempt, 6), 10.0)  # capped: 2.0 ** 1024 overflows


def default_input(runnable: Any, text: str) -> Any:
    """What the served runnable is invoked with: the request's text itself."""
    return text


def default_output(result: Any) -> Any:
    """The task's result from what the runnable returned: a string as it is, anything else as
    JSON data (what JSON cannot hold, as its ``str``)."""
    return result if isinstance(result, str) else json.loads(json.dumps(result, default=str))


@dataclass(frozen=True)
class PushConfigs:
    """A task's push notification configs, as kept, that its owner's request is about."""

    task_id: str
    asker: Asker
    configs: dict[str, JsonObject]
    config_id: str  # the config the request names ("" where it names none)


class CannotResume(Exception):
    """An answer to an input-required task of a server given no ``to_resume``: its task fails
    with these words (a traceback would tell its caller nothing it can act on)."""


@dataclass(frozen=True)
class Turn:
    """One run of a task: its new caller message and what the store held before it."""

    task_id: str
    context_id: str
    text: str
    message: MessageJson  # the A2A message, as sent
    existing: TaskJson | None  # the task's snapshot before this turn, if any
    resume: bool  # the answer to an input-required task
    owner: str | None = None  # the reply mailbox that sent the task: its caller
    sender: str | None = None  # the agent the broker vouched sent it (None: nothing vouches)

    @property
    def asker(self) -> Asker:
        return Asker(self.owner, self.sender)

    @property
    def slot(self) -> Slot:
        return (self.asker.scope, self.task_id)


def _interrupt_text(interrupts: Any) -> str:
    values = [getattr(i, "value", i) for i in interrupts]
    shown = [v if isinstance(v, str) else json.dumps(v, default=str) for v in values]
    return "\n".join(shown) or "input required"


MAX_PUSH_CONFIGS = 8  # per task


class StateFields(TypedDict, total=False):
    """What a state of a task holds beside its state (``mail.task``'s keywords), and its
    ``answer``: ``"message"`` where the agent answered with a Message (docs/a2a.md)."""

    status_text: str
    status_message: MessageJson | None
    artifacts: list[ArtifactJson]
    answer: str


class KeyedLock:
    """One holder per key at a time, first come first served; a key's lock lasts while used."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}  # key -> (lock, its users)

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            users = self._locks[key][1] - 1
            if users:
                self._locks[key] = (lock, users)
            else:
                del self._locks[key]


class AgentServer:
    """A served agent: ``await server.start()`` (or ``serve_agent``), ``await server.stop()``.

    What it serves is runnable-like: any object with ``async ainvoke(input, config)`` (a
    LangChain Runnable, a LangGraph graph, or a class of your own). ``to_input`` and
    ``to_output`` turn a request's text into its input and its result into the task's;
    ``to_resume`` turns the answer to an input-required task into the input that resumes it
    (None, the default: such an answer fails the task, saying the agent cannot resume)."""

    owns_client = False  # serve_agent(server=...) opened the client: stop() closes it

    def __init__(
        self,
        runnable: Any,
        *,
        name: str,
        client: Mq9Client,
        mailbox: str | None = None,
        card: CardJson | None = None,
        worker: str | None = None,
        group: str | None = None,
        max_concurrency: int = 8,
        to_input: Callable[[Any, str], Any] = default_input,
        to_output: Callable[[Any], Any] = default_output,
        to_resume: Callable[[str], Any] | None = None,
        register: bool = True,
        reader_options: dict[str, Any] | None = None,
        retry_delay: Callable[[int], float] = backoff,
        push_destinations: Destinations | None = None,
        working_after: float = WORKING_AFTER,
        push_signer: PushSigner | None = None,
        event_ttl: int = EVENT_TTL,
    ) -> None:
        self.runnable = runnable
        self.name = name
        # A2A push notifications, to the URLs the operator's allow-list lets through
        # (None: refused); delivered as wakes are, one task's states in order
        self.push = Deliverer(push_destinations) if push_destinations is not None else None
        # Each push signed with the agent's own key (a JWT), its public keys in the card
        self.push_signer = None
        if self.push is not None:
            self.push_signer = push_signer or PushSigner.generate(issuer=name)
        self._pushing: dict[Slot, asyncio.Task[None]] = {}
        self.client = client
        self.mailbox = mailbox or name
        self.card = dict(card or {})
        # A worker's name must be the same when it restarts (it takes back what it held) and
        # differ between live replicas: the host's name fits one replica per host.
        self.worker = worker or f"{name}@{socket.gethostname()}"
        self.group = group or f"{name}.a2a"
        self.to_input = to_input
        self.to_output = to_output
        self.to_resume = to_resume
        self.register = register
        self.retry_delay = retry_delay
        if not working_after >= 0:  # NaN too
            raise ValueError(f"working_after is seconds, 0 or more, not {working_after!r}")
        self.working_after = working_after
        if not isinstance(event_ttl, int) or event_ttl < 0:
            raise ValueError(f"event_ttl is whole seconds, 0 or more, not {event_ttl!r}")
        self.event_ttl = event_ttl
        self.store = TaskStore(client, self.mailbox)
        # A request past its retry budget (it took every replica that ran it down with it:
        # docs/groups.md) is set aside; its caller is told, unless the options say otherwise.
        options = {"on_dead_letter": self._set_aside, **(reader_options or {})}
        self.reader = GroupReader(client, self.mailbox, self.group, worker=self.worker, **options)
        self.arrivals = Arrivals(client, [self.mailbox])  # requests read as they arrive
        # Graphs running at once, and requests held (handed out, not finished): a few more
        # than run, so a cancel or a GetTask still gets read while every slot is busy.
        self._slots = asyncio.Semaphore(max_concurrency)
        self._most_held = max_concurrency + HELD_EXTRA
        self._held = asyncio.Semaphore(self._most_held)
        # task -> run (its result and interrupts), owner
        self._running: dict[Slot, tuple[asyncio.Task[tuple[Any, Any]], Asker]] = {}
        self._handlers: set[asyncio.Task[None]] = set()  # requests being handled
        self._one_task = KeyedLock()  # by task (Slot): its requests, until its run starts
        # each state a task's events, numbered in the order written (one at a time per
        # task): the last number given, while the task runs (from its stored state after that)
        self._numbering = KeyedLock()
        self._seqs: dict[Slot, int] = {}
        self._progressed: set[Slot] = set()  # runs that reported their own working states
        self._loop: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self.handled = 0  # requests finished (any method), for tests and reports

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Self:
        await ensure_mailbox(self.client, self.mailbox)
        await ensure_mailbox(self.client, self.store.mailbox)
        if self.register:
            await self.client.agent_register(self.agent_card())
        await self.arrivals.start()
        self._loop = asyncio.create_task(self._serve(), name=f"mq9-a2a-{self.name}")
        self._watch = asyncio.create_task(self._watch_cancels(), name=f"mq9-a2a-cancel-{self.name}")
        return self

    def agent_card(self) -> CardJson:
        """The A2A card this agent registers: the developer's fields, its name, and its
        mailbox as the interface (``mq9://<mailbox>``, protocolBinding ``mq9``)."""
        card = {k: v for k, v in self.card.items() if k not in ("name", "mailbox")}
        capabilities = dict(card.get("capabilities") or {})
        capabilities.setdefault("streaming", True)
        capabilities["pushNotifications"] = self.push is not None
        # Says "I take A2A tasks": call_agent routes by capability only to such agents.
        extensions = [e for e in capabilities.get("extensions") or [] if e != w.tasks_capability()]
        capabilities["extensions"] = [*extensions, w.tasks_capability()]
        if self.push_signer is not None:  # where a receiver finds the keys pushes verify with
            capabilities["extensions"].append(
                {"uri": PUSH_JWT_EXTENSION, "params": {"jwks": self.push_signer.jwks()}}
            )
        card["capabilities"] = capabilities
        card.setdefault("description", f"{self.name}, an agent served over mq9")
        # Skills given as plain words become A2A skills, so the card stays an A2A card (a
        # card that is none would be registered without its capabilities).
        card["skills"] = card_skills(card.get("skills") or [])
        return {**card, "name": self.name, "mailbox": self.mailbox}

    async def stop(self) -> None:
        """Stop reading and stop the tasks under way WITHOUT a final state: their requests
        stay undone, so the group hands them out again (at least once)."""
        self._stopping = True
        jobs: list[asyncio.Task[Any]] = [
            j for j in (self._loop, self._watch, *self._handlers) if j is not None
        ]
        jobs += [run for run, _owner in self._running.values()]
        jobs += list(self._pushing.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        await self.arrivals.stop()
        if self.push is not None:
            await self.push.close()
        if self.owns_client:
            await self.client.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        if self._loop is None:
            await self.start()
        assert self._loop is not None
        await self._loop

    @classmethod
    async def serve(
        cls,
        runnable: Any,
        *,
        name: str,
        card: CardJson | None = None,
        server: str | None = None,
        client: Mq9Client | None = None,
        client_options: JsonObject | None = None,
        **options: Any,
    ) -> Self:
        """``serve_agent`` for this class of server (a subclass's ``serve_agent`` is this)."""
        if (server is None) == (client is None):
            raise ValueError("serve_agent needs server= (a URL) or client= (an open Mq9Client)")
        if client is not None and client_options:
            raise ValueError("client_options are for the client serve_agent opens: give server=")
        own = client is None
        if client is None:
            client = await Mq9Client(server, **(client_options or {})).connect()
        agent = cls(runnable, name=name, client=client, card=card, **options)
        agent.owns_client = own
        try:
            return await agent.start()
        except BaseException:
            if own:
                await client.close()
            raise

    # -- the loop ---------------------------------------------------------------------------

    async def _serve(self) -> None:
        with self.arrivals.bell(self.mailbox) as bell:
            await self._read_requests(bell)

    async def _read_requests(self, bell: Bell) -> None:
        backoff = 0.1
        batch: list[Message] | None = None  # None: look at once
        found = False  # requests were read since the last wait
        while not self._stopping:
            await self._held.acquire()  # room for one more before taking anything
            self._held.release()
            free = max(1, self._most_held - len(self._handlers))
            if batch is not None and not (batch and self._more_to_read()):
                # Nothing more to take: until a request arrives, or the next look.
                await bell.wait(FETCH_WAIT_MS / 1000, found=found)
                found = False
            try:
                batch = await self.reader.fetch(num_msgs=free)
                found = found or bool(batch)
                backoff = 0.1
            except Mq9Error as exc:
                log.warning("agent %s: reading %s failed: %s", self.name, self.mailbox, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                batch = None
                continue
            for msg in batch:
                await self._held.acquire()
                job = asyncio.create_task(self._handle(msg))
                self._handlers.add(job)
                job.add_done_callback(self._handlers.discard)

    def _more_to_read(self) -> bool:
        """Whether the last FETCH's answer was cut at the count asked for (more may wait behind
        it); one that was not showed every request there was, each lane read to its end."""
        return len(self.reader.last_answer) >= self.reader.state.asked

    async def _handle(self, msg: Message) -> None:
        """One request, whatever it holds: never raises, and marks the message done unless the
        server is stopping (then the group hands it out again). Each broker step inside is
        tried until the broker takes it (``_persist``), so a task runs once per request."""
        try:
            with tracing.processing(self.mailbox, msg):  # the caller's trace goes on here
                await self._dispatch(msg)
            finished = True
        except asyncio.CancelledError:
            finished = not self._stopping
        except Exception as exc:  # a bug, or a broker refusal: the caller still hears of it
            log.exception("agent %s: request msg %s failed", self.name, msg.msg_id)
            await self._unprocessable(msg, exc)
            finished = True
        finally:
            self._held.release()
        if finished:
            self.handled += 1
            with contextlib.suppress(Mq9Error):
                await self._persist("marking a request done", lambda: self.reader.done(msg.msg_id))

    async def _persist(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """``step()`` until the broker carries it out: a failure the broker may get over (it
        is away, or slow) is tried again after a growing pause (``retry_delay``), however long
        it lasts, so a finished result waits here until it is written; others raise."""
        attempt = 0
        while True:
            try:
                return await step()
            except Mq9Error as exc:
                if not exc.retryable:
                    raise
                log.warning("agent %s: %s, try %d: %s", self.name, what, attempt + 1, exc)
                await asyncio.sleep(self.retry_delay(attempt))
                attempt += 1

    async def _dispatch(self, msg: Message) -> None:
        try:
            request = w.read_request(msg.header, msg.payload)
        except w.Rejection as exc:
            await self._reject(_asker(msg), exc)
            return
        await ANSWERS[request.method](self, request, msg.msg_id)  # read_request: one of them

    async def _reject(self, asker: Asker, exc: w.Rejection) -> None:
        """A request that is no A2A request gets a rejected task saying why (under a new id
        when the one it names is another's task: never a state of that task)."""
        log.info("agent %s: rejected a request: %s", self.name, exc)
        reply_to = asker.reply_to
        if not w.answerable(reply_to):
            return  # nowhere to answer
        task_id = exc.task_id
        if task_id is not None and not await self._may_name(asker, task_id):
            task_id = None
        snapshot = w.task(task_id or w.new_id(), w.new_id(), w.REJECTED, status_text=str(exc))
        await self._deliver(reply_to, snapshot)

    async def _may_name(self, asker: Asker, task_id: str) -> bool:
        """Whether an answer about ``task_id`` may go to ``asker``: the task is its own, or
        none is stored under that id."""
        stored = await self._stored(task_id, asker)
        return stored is None or asker.owns(stored)

    async def _unprocessable(self, msg: Message, exc: Exception) -> None:
        """The error answer to a request that failed for a reason of the agent's own."""
        asker = _asker(msg)
        task_id = msg.header.get(w.HEADER_TASK_ID)
        if w.answerable(asker.reply_to) and w.is_valid_id(task_id):
            text = f"the agent could not process the request: {type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                if await self._may_name(asker, task_id):
                    await self._error(asker.reply_to, task_id, clipped(text, 500))

    async def _set_aside(self, msg: Message, attempts: int, reason: str) -> None:
        """A request the consumer group set aside (its dead-letter copy is stored): the task
        fails, saying so, for its owner only. Raising leaves the request to be set aside again."""
        asker = _asker(msg)
        reply_to = asker.reply_to
        task_id = msg.header.get(w.HEADER_TASK_ID)
        if not (w.answerable(reply_to) and w.is_valid_id(task_id)):
            return  # nobody to tell
        existing = await self._stored(task_id, asker)
        if existing is not None and (
            not asker.owns(existing) or w.task_state(existing) in w.STOPPED
        ):
            return  # another's task (a stranger naming its id), or one that ended already
        try:
            context_id = w.read_request(msg.header, msg.payload).body["message"].get("contextId")
        except Exception:  # whatever it holds: the task still fails, under a context of its own
            context_id = None
        context_id = (existing and existing.get("contextId")) or context_id or w.new_id()
        text = f"the agent set this request aside after {attempts} deliveries: {reason}"
        failed = w.task(
            task_id,
            context_id,
            w.FAILED,
            status_text=clipped(text, 1000),
            history=existing.get("history") if existing else None,
            metadata={"mq9": asker.metadata(self.name)},
        )
        await self._publish(failed, asker)

    async def _error(
        self, reply_to: str | None, task_id: str, text: str, code: int = w.INVALID_PARAMS
    ) -> None:
        """An answer that is no task state (an unknown task, a task that cannot go on): kept
        under ``error.{id}``, so it never hides the task's real state; ``code`` says what it
        is (the caller reads the code, never the words)."""
        if reply_to is None:
            return
        body = w.error_reply(task_id, text, code)
        headers = {w.HEADER_TYPE: "Error", w.HEADER_TASK_ID: task_id, w.HEADER_LAST: "true"}

        async def send() -> None:
            await self.client.send(
                reply_to, w.json_text(body), key=f"error.{task_id}", headers=headers
            )

        await self._to_caller(reply_to, f"answering about task {task_id}", send)

    async def _deliver(self, reply_to: str, snapshot: TaskJson, *, event: bool = False) -> None:
        """Leave a task state with the caller (its reply mailbox); ``event``: a new state,
        also left as the task's event (``store.log_event``). Each GetTask or CancelTask
        is answered anew: no idempotency key makes a state sent again the one sent before
        (the agent's own writes spend none of the keys its callers can fill)."""
        what = f"sending task {snapshot['id']} to {reply_to}"
        newest = self._to_caller(reply_to, what, lambda: deliver(self.client, reply_to, snapshot))
        if not event or not w.seq_of(snapshot):
            await newest
            return
        logged = self._to_caller(
            reply_to,
            what + " (event)",
            lambda: log_event(self.client, reply_to, snapshot, ttl=self.event_ttl),
        )
        both = await asyncio.gather(logged, newest, return_exceptions=True)
        failed = [r for r in both if r is not None]
        if failed:
            raise failed[0]

    async def _to_caller(
        self, reply_to: str, what: str, send: Callable[[], Awaitable[None]]
    ) -> None:
        try:
            await self._persist(what, send)
        except TooLarge:
            raise  # the state itself: _publish makes it a failed one
        except Mq9Error as exc:  # the caller's mailbox is gone (or refuses): its loss alone
            log.warning("agent %s: %s: %s", self.name, what, exc)

    async def _stored(self, task_id: str, asker: Asker) -> TaskJson | None:
        """``asker``'s task ``task_id`` where the broker vouches for senders (another's under
        the same id is none of its business), the one task of that id where nothing does."""
        return await self._persist(
            f"reading task {task_id}", lambda: self.store.get(task_id, asker)
        )

    # -- SendMessage ------------------------------------------------------------------------

    async def _send_message(self, request: w.Request, msg_id: int) -> None:
        task_id = request.body["message"].get("taskId") or request.task_id or w.new_id()
        slot = (Asker(request.reply_to, request.sender).scope, task_id)
        async with self._slots:
            # Until its run starts, one request of a task at a time, in the order handed out:
            # a cancel (critical, handed out first) is kept before the send it cancels is read.
            async with self._one_task.hold(slot):
                turn = await self._admit(request, task_id, msg_id)
                if turn is None:
                    return  # answered already
                run = asyncio.create_task(self._invoke(turn))
                self._running[turn.slot] = (run, turn.asker)
            await self._follow(turn, run)

    async def _admit(self, request: w.Request, task_id: str, msg_id: int) -> Turn | None:
        """The turn a SendMessage starts, or None when it is answered without one: a stranger
        naming another's task, an answer to a task that asks none, a task that ran already, or
        one its owner canceled before it came."""
        msg = request.body["message"]
        owner = request.reply_to
        asker = Asker(owner, request.sender)
        # Read together: the task as stored, and whether its owner canceled it already.
        existing, canceled = await asyncio.gather(
            self._stored(task_id, asker),
            self._persist(
                f"looking for a cancel of {task_id}",
                lambda: self.store.cancel_requested(task_id, asker),
            ),
        )
        text = w.parts_text(msg["parts"])
        if msg.get("taskId"):  # the answer to an input-required task
            if not asker.owns(existing):
                # Only the caller that sent the task may answer it; to others it is not there.
                await self._not_found(asker, task_id, existing)
                return None
            if w.task_state(existing) != w.INPUT_REQUIRED:
                state = w.short_state(w.task_state(existing))
                await self._error(
                    owner,
                    task_id,
                    f"task {task_id} is {state}: only an input-required task takes an answer",
                    w.UNSUPPORTED_OPERATION,
                )
                return None
            turn = Turn(
                task_id, existing["contextId"], text, msg, existing, True, owner, asker.sender
            )
        else:
            if existing is not None and not asker.owns(existing):
                if not asker.named_by_another(existing):
                    await self._error(
                        owner, task_id, f"task {task_id} exists: a new task needs a new id"
                    )
                return None
            if existing is not None and w.task_state(existing) in w.STOPPED:
                # Handed out again after a crash, or sent twice: it ran already.
                await self._resend_stopped(existing, asker)
                return None
            context_id = msg.get("contextId") or w.new_id()
            turn = Turn(task_id, context_id, text, msg, existing, False, owner, asker.sender)
        if self.reader.records_begin(msg_id):
            # Its run starts now: a replica that dies from here on charges this request,
            # never those waiting for a slot behind it (docs/groups.md, "Poison messages").
            await self._persist(
                f"recording that request {msg_id} runs", lambda: self.reader.begin([msg_id])
            )
        if canceled:
            await self._report(turn, w.CANCELED, status_text="canceled before it started")
            return None
        return turn

    async def _resend_stopped(self, existing: TaskJson, asker: Asker) -> None:
        """A stopped task's request handed out again: its stopped state goes to its owner
        unless it got there already (``TaskStore.delivered``: a replica that died between
        keeping it and sending it left no note), so the caller's reply mailbox holds it once."""
        owner = asker.reply_to
        if not owner:
            return
        sent = await self._persist(
            f"reading what task {existing['id']} sent",
            lambda: self.store.delivered(existing["id"], asker),
        )
        seq = w.seq_of(existing)
        if not seq or sent < seq:
            await self._deliver(owner, existing)

    async def _report(self, turn: Turn, state: str, **fields: Unpack[StateFields]) -> bool:
        """Publish a state of the turn's task (``_publish``)."""
        earlier = (turn.existing.get("history") if turn.existing else None) or []
        said: MessageJson = {**turn.message, "taskId": turn.task_id, "contextId": turn.context_id}
        history = [*earlier, said]
        # Who owns the task, also with no reply mailbox where a sender is vouched for: the
        # store keeps each state under its owner's key (store.TaskStore.put)
        owned = turn.owner or turn.sender
        meta: JsonObject | None = {"mq9": turn.asker.metadata(self.name)} if owned else None
        answer = fields.get("answer")  # "message": the agent answered with a Message
        if answer:
            meta = {"mq9": {**(meta or {}).get("mq9", {}), "answer": answer}}
        snapshot = w.task(
            turn.task_id,
            turn.context_id,
            state,
            status_text=fields.get("status_text"),
            status_message=fields.get("status_message"),
            artifacts=fields.get("artifacts"),
            history=history,
            metadata=meta,
        )
        # Numbered after the state the turn began from (the store's: also after a restart)
        self._seqs.setdefault(turn.slot, w.seq_of(turn.existing))
        return await self._publish(snapshot, turn.asker)

    async def _follow(self, turn: Turn, run: asyncio.Task[tuple[Any, Any]]) -> None:
        """Report a started run: working while it runs, then how it ended."""
        try:
            # A run that ends within ``working_after`` reports its end only (a cancel of the
            # run ends this wait too: it is done then)
            await asyncio.wait({run}, timeout=self.working_after)
            said = turn.slot in self._progressed  # (an executor's own updates say it)
            if not run.done() and not said and not await self._report(turn, w.WORKING):
                run.cancel()  # the request cannot be kept: the task failed, saying why
                await asyncio.gather(run, return_exceptions=True)
                return
            result, interrupts = await run
        except asyncio.CancelledError:
            if self._stopping:
                raise  # not a cancel of the task: leave it to be handed out again
            await self._report(turn, w.CANCELED, status_text="canceled")
            return
        except Exception as exc:  # the run failed: the caller gets its words
            text = clipped(f"{type(exc).__name__}: {exc}", 4000)
            await self._report(turn, w.FAILED, status_text=text)
            return
        finally:
            self._running.pop(turn.slot, None)
            self._progressed.discard(turn.slot)
        if interrupts:
            await self._report(turn, w.INPUT_REQUIRED, **self._asked(interrupts))
            return
        try:
            completed = self._completed(result)
        except Exception as exc:
            text = f"the result could not be read: {exc!r:.500}"
            await self._report(turn, w.FAILED, status_text=text)
            return
        await self._report(turn, w.COMPLETED, **completed)

    def _asked(self, interrupts: Any) -> StateFields:
        """The input-required state's fields: the ``__interrupt__`` values (a LangGraph
        ``interrupt()``'s) as the question; ``serve_executor`` keeps the executor's own status
        message."""
        return {"status_text": _interrupt_text(interrupts)}

    def _completed(self, result: Any) -> StateFields:
        """The completed state's fields from what the run returned: its output as the one
        artifact (``to_output``); ``serve_executor`` keeps the executor's own artifacts."""
        return {"artifacts": [w.artifact(self.to_output(result))]}

    async def _publish(self, snapshot: TaskJson, owner: Asker) -> bool:
        """Leave a state in the store and with the caller, however long the broker is away.
        A state the broker cannot carry (too large, or nested too deep to write as JSON)
        becomes ``failed`` saying why: True when ``snapshot`` itself was written."""
        try:
            await self._keep_state(snapshot, owner)
            return True
        except TooLarge as exc:
            why = f"{exc.size or 'too many'} bytes, more than the broker carries ({exc.limit})"
        except RecursionError:
            why = "nested too deep to be written as JSON"
        state = w.short_state(w.task_state(snapshot))
        log.warning("agent %s: task %s %s: %s", self.name, snapshot["id"], state, why)
        failed = w.task(
            snapshot["id"],
            snapshot["contextId"],
            w.FAILED,
            status_text=f"the task's {state} state is {why}: send or return less, or a "
            "reference to the data",
            metadata=snapshot.get("metadata"),
        )
        await self._keep_state(failed, owner)
        return False

    async def _keep_state(self, snapshot: TaskJson, owner: Asker) -> None:
        """Number the state (the task's next event: after the last one this server
        wrote, or the stored state's), then keep it (``_write_state``). One task's states are
        numbered and written one at a time, so their numbers are the order they were kept in."""
        slot: Slot = (owner.scope, snapshot["id"])
        async with self._numbering.hold(slot):
            seq = w.seq_of(snapshot)
            if not seq:  # (a state that was not kept, numbered already, keeps its number)
                before = self._seqs.get(slot)
                if before is None:
                    stored = self._stored(snapshot["id"], owner)
                    before = w.seq_of(await stored)
                seq = before + 1
                snapshot = w.with_seq(snapshot, seq)
            await self._write_state(snapshot, owner)
            if w.task_state(snapshot) in w.STOPPED:
                self._seqs.pop(slot, None)  # a later turn numbers from the stored state
            else:
                self._seqs[slot] = seq

    async def _write_state(self, snapshot: TaskJson, owner: Asker) -> None:
        """Keep a state in the store and leave it with the caller. A state that stops the task
        is stored before the caller may see it: a replica that dies between the two leaves it
        stored, so a redelivered request sends it again instead of running the task again. A
        ``working`` state goes to both at once. Either way both are written before the next
        state is (each mailbox keeps the newest state under the task's key)."""
        what = f"keeping task {snapshot['id']}"
        reply_to = owner.reply_to
        keep = self._persist(what, lambda: self.store.put(snapshot))
        if reply_to and w.task_state(snapshot) not in w.STOPPED:
            both = await asyncio.gather(
                keep, self._deliver(reply_to, snapshot, event=True), return_exceptions=True
            )
            failed = [r for r in both if r is not None]
            if failed:
                raise failed[0]
        else:
            await keep
            if reply_to:
                await self._deliver(reply_to, snapshot, event=True)
                # noted, so a request handed out again sends it only where it never came
                await self._persist(
                    f"noting task {snapshot['id']} sent",
                    lambda: self.store.keep_delivered(snapshot, owner),
                )
        if self.push is not None:
            self._push_state(snapshot, owner)

    # -- push notifications ------------------------------------------------------------------

    def _push_state(self, snapshot: TaskJson, owner: Asker) -> None:
        """POST the state to the task's push URLs, after its earlier states (in order)."""
        task_id: Slot = (owner.scope, snapshot["id"])
        before = self._pushing.get(task_id)

        async def push() -> None:
            if before is not None:
                with contextlib.suppress(Exception):
                    await before
            await self._push_now(snapshot, owner)

        job = asyncio.ensure_future(push())
        self._pushing[task_id] = job

        def done(finished: asyncio.Task[None]) -> None:
            if self._pushing.get(task_id) is finished:
                del self._pushing[task_id]

        job.add_done_callback(done)

    async def _push_now(self, snapshot: TaskJson, owner: Asker) -> None:
        assert self.push is not None
        try:
            configs = await self.store.push_configs(snapshot["id"], owner)
        except Mq9Error as exc:
            log.warning("agent %s: push configs of %s unread: %s", self.name, snapshot["id"], exc)
            return
        body = w.json_text({"task": snapshot}).encode()
        for config in configs.values():
            assert self.push_signer is not None
            headers = push_headers(config, body, self.push_signer.headers)
            what = f"push of task {snapshot['id']} ({w.short_state(w.task_state(snapshot))})"
            try:
                await self.push.post(str(config.get("url", "")), body, headers, what)
            except Exception as exc:  # set aside: the caller still has its reply mailbox
                log.warning("agent %s: %s failed: %s", self.name, what, type(exc).__name__)

    # -- push notification configs: create, get, list, delete (the owner's only) ------------

    async def _push_configs(self, request: w.Request) -> PushConfigs | None:
        """The task's push notification configs a request is about, where it names a task of
        its sender's and this agent sends pushes; None when it is answered already."""
        body, reply_to = request.body, request.reply_to
        task_id = body.get("taskId") or request.task_id
        if not w.is_valid_id(task_id):
            await self._error(reply_to, w.new_id(), f"an A2A {request.method}Request needs taskId")
            return None
        if self.push is None:
            await self._error(
                reply_to,
                task_id,
                "push notifications are not enabled on this agent (its "
                "operator allows them with push_destinations); results wait in your reply mailbox",
                w.PUSH_NOT_SUPPORTED,
            )
            return None
        asker = Asker(reply_to, request.sender)
        snapshot = await self._stored(task_id, asker)
        if not asker.owns(snapshot):
            await self._not_found(asker, task_id, snapshot)
            return None
        configs = await self._persist(
            "reading push configs", lambda: self.store.push_configs(task_id, asker)
        )
        given = body.get("id")
        return PushConfigs(task_id, asker, configs, given if isinstance(given, str) else "")

    async def _keep_push_configs(self, found: PushConfigs) -> None:
        await self._persist(
            "keeping push configs",
            lambda: self.store.keep_push_configs(found.task_id, found.asker, found.configs),
        )

    async def _create_push(self, request: w.Request, _msg_id: int) -> None:
        push = self.push  # None: _push_configs answered so
        if (found := await self._push_configs(request)) is None or push is None:
            return
        reply_to, task_id, configs = request.reply_to, found.task_id, found.configs
        body = request.body
        url = body.get("url")
        if not isinstance(url, str) or len(url) > 2048:
            await self._error(reply_to, task_id, "a push notification config needs a url")
            return
        try:
            await push.destinations.check_url(url)
        except Refused as exc:
            await self._error(reply_to, task_id, f"push notification url refused: {exc}")
            return
        config_id = found.config_id if w.is_valid_id(found.config_id) else w.new_id()
        config: JsonObject = {k: body[k] for k in ("url", "token", "authentication") if k in body}
        config.update(id=config_id, taskId=task_id)
        configs[config_id] = config
        if len(configs) > MAX_PUSH_CONFIGS:
            await self._error(reply_to, task_id, f"at most {MAX_PUSH_CONFIGS} push configs")
            return
        await self._keep_push_configs(found)
        await self._answer(reply_to, task_id, "TaskPushNotificationConfig", config)

    async def _get_push(self, request: w.Request, _msg_id: int) -> None:
        if (found := await self._push_configs(request)) is None:
            return
        if found.config_id not in found.configs:
            why = f"push config {found.config_id!r} not found"
            await self._error(request.reply_to, found.task_id, why)
            return
        config = found.configs[found.config_id]
        await self._answer(request.reply_to, found.task_id, "TaskPushNotificationConfig", config)

    async def _list_push(self, request: w.Request, _msg_id: int) -> None:
        if (found := await self._push_configs(request)) is None:
            return
        listed = {"configs": list(found.configs.values()), "nextPageToken": ""}
        kind = "ListTaskPushNotificationConfigsResponse"
        await self._answer(request.reply_to, found.task_id, kind, listed)

    async def _delete_push(self, request: w.Request, _msg_id: int) -> None:
        if (found := await self._push_configs(request)) is None:
            return
        found.configs.pop(found.config_id, None)
        await self._keep_push_configs(found)
        await self._answer(request.reply_to, found.task_id, "Empty", {})

    async def _answer(
        self, reply_to: str | None, task_id: str, kind: str, body: JsonObject
    ) -> None:
        """An answer that is no task state, of type ``kind``, to the caller."""
        if reply_to is None:
            return
        headers = {w.HEADER_TYPE: kind, w.HEADER_TASK_ID: task_id, w.HEADER_LAST: "true"}

        async def send() -> None:  # keyed: the caller finds the task's last answer by key
            await self.client.send(
                reply_to, w.json_text(body), key=f"answer.{task_id}", headers=headers
            )

        await self._to_caller(reply_to, f"answering {kind}", send)

    async def _invoke(self, turn: Turn) -> tuple[Any, Any]:
        """Run the runnable for one turn: (its result, its interrupts or None)."""
        # The owner's key: a vouched sender's conversation is its own, whoever names its
        # reply mailbox (where nothing vouches, the reply mailbox alone, as before)
        config = {"configurable": {"thread_id": w.thread_id(turn.asker.key, turn.context_id)}}
        if not turn.resume:
            payload = self.to_input(self.runnable, turn.text)
        elif self.to_resume is not None:
            payload = self.to_resume(turn.text)
        else:
            raise CannotResume(
                f"agent {self.name} cannot resume task {turn.task_id}: it is served with no "
                "to_resume, so the answer has nothing to go on with"
            )
        result = await self.runnable.ainvoke(payload, config)
        interrupts = result.get("__interrupt__") if isinstance(result, dict) else None
        return result, interrupts

    # -- GetTask, ListTasks, CancelTask -----------------------------------------------------
    # Each answers the task's owner only: to anyone else a task is "not found".

    async def _get_task(self, request: w.Request, _msg_id: int) -> None:
        task_id = request.named_task()
        asker = Asker(request.reply_to, request.sender)
        snapshot = await self._stored(task_id, asker)
        if not asker.owns(snapshot) or request.reply_to is None:
            await self._not_found(asker, task_id, snapshot)
        else:
            await self._deliver(request.reply_to, snapshot)

    async def _not_found(self, asker: Asker, task_id: str, snapshot: TaskJson | None) -> None:
        """Tell an asker the task is not found (it is not its task): at its reply mailbox,
        unless that is the owner's own named by another sender, where a "not found" would sit
        among the owner's answers."""
        if asker.named_by_another(snapshot):
            log.info(
                "agent %s: a request about task %s named its owner's reply mailbox "
                "from another sender: not answered",
                self.name,
                task_id,
            )
            return
        await self._error(asker.reply_to, task_id, f"task {task_id} not found", w.TASK_NOT_FOUND)

    async def _list_tasks(self, request: w.Request, _msg_id: int) -> None:
        reply_to = request.reply_to
        if reply_to is None:
            return
        context_id = request.body.get("contextId") or ""
        context_id = context_id if isinstance(context_id, str) else ""
        asker = Asker(reply_to, request.sender)
        tasks = await self._persist("listing tasks", lambda: self.store.list(asker, context_id))
        headers = {w.HEADER_TYPE: "ListTasksResponse", w.HEADER_LAST: "true"}
        if request.task_id:
            headers[w.HEADER_TASK_ID] = request.task_id
        body = {"tasks": tasks, "totalSize": len(tasks), "pageSize": len(tasks)}

        async def send() -> None:
            await self.client.send(reply_to, w.json_text(body), headers=headers)

        await self._to_caller(reply_to, "answering ListTasks", send)

    async def _cancel_task(self, request: w.Request, _msg_id: int) -> None:
        task_id = request.named_task()
        asker = Asker(request.reply_to, request.sender)
        async with self._one_task.hold((asker.scope, task_id)):
            await self._cancel(task_id, asker)

    async def _cancel(self, task_id: str, asker: Asker) -> None:
        snapshot = await self._stored(task_id, asker)
        if snapshot is not None and not asker.owns(snapshot):
            await self._not_found(asker, task_id, snapshot)
            return
        # Seen by a replica running it, and on arrival (where it counts if asker sent it).
        await self._persist(
            f"keeping the cancel of {task_id}", lambda: self.store.request_cancel(task_id, asker)
        )
        running = self._running.get((asker.scope, task_id))  # its own run only
        if running is not None:
            running[0].cancel()  # its end writes canceled too
            if snapshot is None:
                # Running here with no state kept yet (it has run less than working_after):
                # its end keeps and tells how it ended, never "canceled before it started"
                return
        if snapshot is not None and w.task_state(snapshot) not in w.FINAL:
            snapshot = w.task(
                task_id,
                snapshot["contextId"],
                w.CANCELED,
                status_text="canceled",
                history=snapshot.get("history"),
                metadata=snapshot.get("metadata"),
            )
            # to the store and the owner, who asked
            await self._publish(snapshot, asker)
            return
        if snapshot is None:  # not read yet (or never sent): it will be canceled on arrival
            snapshot = w.task(task_id, "", w.CANCELED, status_text="canceled before it started")
        if asker.reply_to:  # the answer: final already, or canceled on arrival
            await self._deliver(asker.reply_to, snapshot)

    async def _watch_cancels(self) -> None:
        """Stop a run here whose task another replica canceled."""
        while not self._stopping:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            for (_scope, task_id), (run, owner) in list(self._running.items()):
                try:
                    if await self.store.cancel_requested(task_id, owner):
                        run.cancel()
                except Mq9Error as exc:
                    log.warning("agent %s: cancel check failed: %s", self.name, exc)


# Each A2A method an agent answers and its handler, as the broker's command table
# (``mq9_broker.engine``'s ``COMMANDS``): ``handler(server, request, msg_id)``, ``msg_id`` the
# request's message in the agent's mailbox. ``mail.read_request`` refuses any other method.
Handler = Callable[[AgentServer, w.Request, int], Awaitable[None]]
ANSWERS: dict[str, Handler] = {
    w.SEND: AgentServer._send_message,
    w.GET_TASK: AgentServer._get_task,
    w.LIST_TASKS: AgentServer._list_tasks,
    w.CANCEL_TASK: AgentServer._cancel_task,
    w.CREATE_PUSH: AgentServer._create_push,
    w.GET_PUSH: AgentServer._get_push,
    w.LIST_PUSH: AgentServer._list_push,
    w.DELETE_PUSH: AgentServer._delete_push,
}


def _asker(msg: Message) -> Asker:
    """Who sent a request, as its headers say (``mq9-sender``: only a broker writes it on a
    ``--credentials`` broker; any client may where nothing vouches, as any reply mailbox)."""
    reply_to = msg.header.get(w.HEADER_REPLY_TO) or None
    return Asker(reply_to, msg.header.get(HEADER_SENDER) or None)


async def serve_agent(
    runnable: Any,
    *,
    name: str,
    card: CardJson | None = None,
    server: str | None = None,
    client: Mq9Client | None = None,
    client_options: JsonObject | None = None,
    **options: Any,
) -> AgentServer:
    """Serve ``runnable`` (any object with ``async ainvoke(input, config)``) as the A2A agent
    ``name`` on its mq9 mailbox (``name`` too, unless ``mailbox=`` says otherwise) and return
    the running ``AgentServer``; ``await server.stop()`` ends it (``serve_forever()`` blocks).
    A LangGraph graph is served with ``langchain_mq9``'s ``serve_agent``, which knows its
    messages and resumes its ``interrupt()``.

    >>> server = await serve_agent(runnable, name="agent.summarizer",
    ...                            card={"description": "Summarizes reports"},
    ...                            server="nats://127.0.0.1:4222", worker="replica-1")

    Give ``server=`` (a URL: the server opens and closes its own client, with
    ``client_options``: ``Mq9Client``'s, e.g. the agent's ``credential``, which is otherwise
    read from ``MQ9_CREDENTIAL`` or ``MQ9_CREDENTIAL_FILE``) or ``client=`` (an open
    ``Mq9Client``). ``worker`` names this replica among the agent's replicas: unique per live
    replica, the same after a restart (it then takes back the tasks it held). Other options:
    ``mailbox``, ``group``, ``max_concurrency``, ``to_input``/``to_output`` (how a request's
    text becomes the runnable's input, and its result the task's: ``default_input``, the text,
    and ``default_output``, a string or JSON data), ``to_resume`` (how the answer to an
    input-required task becomes the input that resumes it; None: such an answer fails the
    task), ``register``, ``reader_options`` (for the consumer group's ``GroupReader``),
    ``retry_delay`` (seconds before a failed broker step is tried again, by attempt:
    ``backoff``), ``working_after`` (seconds a run may take before its task is reported
    ``working``: ``WORKING_AFTER``), ``event_ttl`` (whole seconds a task's events stay in its
    caller's reply mailbox for a cut stream to be replayed from: ``EVENT_TTL``, a day; 0 as
    long as the mailbox keeps them).
    """
    return await AgentServer.serve(
        runnable,
        name=name,
        card=card,
        server=server,
        client=client,
        client_options=client_options,
        **options,
    )
