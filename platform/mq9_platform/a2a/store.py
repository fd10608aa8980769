"""Where A2A task state lives on the broker: an agent's task store, ``mq9.tasks.<digest of its
mailbox>`` (under the reserved root: no tool reads or writes it, docs/security.md).

Each state of a task is kept as the whole A2A Task under its key: key compaction keeps the
newest, so a QUERY by key answers it from any replica, after a restart, or while the agent is
offline. The task's owner is who sent it (``Asker``): the agent a ``--credentials`` broker
vouched for (``metadata.mq9.sender``) and the reply mailbox it named (``metadata.mq9.replyTo``);
only requests from both may read, answer or cancel the task. Where a sender is vouched for, a
task id is its owner's alone: the task is kept under ``owned.<digest of its owner>.task.{id}``
(its push configs likewise), so another agent sending a task under the same id makes a task of
its own, which neither blocks nor sees the first. Where nothing vouches (an open broker,
RobustMQ) the reply mailbox is all there is, and anyone may name it: tasks share one id space,
``task.{id}`` (docs/security.md, "Agent calls"). A cancel is kept apart, as ``cancel.{id}``
naming who asked, so that a replica still writing ``working`` cannot hide it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict, TypeGuard, cast

from mq9_wire.protocol.errors import MailboxExists, MailboxNotFound

from ..client.client import Mq9Client
from . import mail as w
from .shapes import JsonObject, OwnerJson, TaskJson

# Whether a client class's ``send`` takes ``idempotency_key``, by class (asked once each).
_TAKES_KEY: dict[type, bool] = {}


class Keyed(TypedDict, total=False):
    idempotency_key: str


def keyed(client: object, key: str | None) -> Keyed:
    """``send``'s ``idempotency_key=key`` for a client that takes one (this package's
    ``Mq9Client``), nothing for one that does not (the official mq9 SDK's client has no such
    keyword: its sends go unkeyed, stored as often as they are sent): ``**keyed(client, key)``.
    A ``send(**options)`` that only passes its options on counts as one that does not."""
    if not key:
        return {}
    kind = type(client)
    takes = _TAKES_KEY.get(kind)
    if takes is None:
        try:
            send = getattr(client, "send", None)
            takes = callable(send) and "idempotency_key" in inspect.signature(send).parameters
        except (AttributeError, TypeError, ValueError):
            takes = False
        _TAKES_KEY[kind] = takes
    return {"idempotency_key": key} if takes else {}


async def ensure_mailbox(client: Mq9Client, address: str) -> None:
    """Create ``address`` (never expiring) unless it is there."""
    with contextlib.suppress(MailboxExists):
        await client.mailbox_create(name=address, ttl=0)


def _object(payload: bytes) -> JsonObject | None:
    """A payload's JSON object, or None (no JSON, or not an object)."""
    try:
        value = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


async def latest(client: Mq9Client, mailbox: str, key: str) -> JsonObject | None:
    """The JSON object kept under ``key`` in ``mailbox``, or None (no such mailbox either):
    as it was kept, its shape the writer's (a caller reads its own records back as
    ``CallRecord``s, an agent its task states as ``TaskJson``)."""
    try:
        found = await client.query(mailbox, key=key)
    except MailboxNotFound:
        return None
    for msg in reversed(found):
        value = _object(msg.payload)
        if value is not None:
            return value
    return None


async def keep(
    client: Mq9Client,
    mailbox: str,
    key: str,
    value: Mapping[str, object],
    *,
    tags: list[str] | None = None,
    headers: dict[str, str] | None = None,
    idempotency_key: str | None = None,
    ttl: int | None = None,
) -> None:
    """Leave ``value`` (JSON) in ``mailbox`` under ``key``: it replaces the older one
    (``idempotency_key``: stored once however often sent, where the client takes keys)."""
    await client.send(
        mailbox,
        w.json_text(value),
        key=key,
        tags=tags,
        headers=headers,
        ttl=ttl,
        **keyed(client, idempotency_key),
    )


async def deliver(client: Mq9Client, mailbox: str, snapshot: TaskJson) -> None:
    """Leave a Task snapshot in a mailbox (a caller's reply mailbox, or a task store), under
    its task's key: it replaces the older one. Sent with no idempotency key (a state is
    the agent's own bookkeeping, so no key its callers spent can refuse it); the same state
    sent again (a broker step tried again) replaces its twin, and readers take it once (each
    state is numbered, ``mail.seq_of``: a number seen is skipped)."""
    headers = w.event_headers(snapshot["id"], w.task_state(snapshot))
    key = w.TASK_KEY + snapshot["id"]
    await keep(client, mailbox, key, snapshot, tags=[w.TASK_TAG], headers=headers)


async def log_event(client: Mq9Client, mailbox: str, snapshot: TaskJson, *, ttl: int = 0) -> None:
    """Leave a numbered task state with the caller as an event of its own: under
    ``event.{id}.{seq}``, never compacted by a later state, so a stream cut at any point is
    replayed from here, for ``ttl`` seconds (0: as long as the mailbox keeps messages). Sent
    with no idempotency key: the same event sent again replaces its twin under the
    same key, read once."""
    seq = w.seq_of(snapshot)
    if not seq:
        return
    key = w.event_key(snapshot["id"], seq)
    await keep(
        client,
        mailbox,
        key,
        snapshot,
        tags=[w.EVENT_TAG],
        headers=w.event_headers(snapshot["id"], w.task_state(snapshot)),
        ttl=ttl or None,
    )


async def events(
    client: Mq9Client, mailbox: str, task_id: str, after: int, upto: int
) -> list[TaskJson] | None:
    """The task's events ``after`` < seq <= ``upto`` kept in ``mailbox``, in order (each read
    by its own key, side by side: a query by tag answers at most 100, oldest first); None
    when one of them is not kept (expired, deleted, or written before events were numbered):
    a gap."""
    if upto <= after:
        return []

    async def one(seq: int) -> TaskJson | None:
        found = cast(TaskJson | None, await latest(client, mailbox, w.event_key(task_id, seq)))
        return found if found is not None and w.seq_of(found) == seq else None

    found: list[TaskJson] = []
    for start in range(after + 1, upto + 1, 32):  # 32 reads at a time
        batch = await asyncio.gather(*(one(s) for s in range(start, min(start + 32, upto + 1))))
        if any(b is None for b in batch):
            return None
        found += [b for b in batch if b is not None]
    return found


def _mq9_metadata(snapshot: Mapping[str, object] | None) -> JsonObject:
    meta = (snapshot or {}).get("metadata")
    mq9 = meta.get("mq9") if isinstance(meta, dict) else None
    return mq9 if isinstance(mq9, dict) else {}


def owner_of(snapshot: Mapping[str, object] | None) -> str | None:
    """The reply mailbox that sent the task (None: it came without one, or is unknown)."""
    reply_to = _mq9_metadata(snapshot).get("replyTo")
    return reply_to if w.answerable(reply_to) else None


def sender_of(snapshot: Mapping[str, object] | None) -> str | None:
    """The agent the broker vouched sent the task (None where nothing vouched)."""
    sender = _mq9_metadata(snapshot).get("sender")
    return sender if isinstance(sender, str) and sender else None


PUSH_KEY = "push."  # + task id: its push notification configs, one record
OWNED_KEY = "owned."  # + digest of a vouched owner + ".": its tasks' records
DELIVERED_KEY = "delivered."  # + task id: the stopped state its owner was sent


@dataclass(frozen=True)
class Asker:
    """Who a request comes from: the reply mailbox its answers go to, and the agent that sent
    it as a ``--credentials`` broker authenticated it (``mq9-sender``, written by the broker on
    every stored message, whatever the sender wrote). Without a sender (an open broker,
    RobustMQ: nothing vouches) the reply mailbox is all there is, and anyone may name it."""

    reply_to: str | None
    sender: str | None = None

    def owns(self, snapshot: TaskJson | None) -> TypeGuard[TaskJson]:
        """Whether the task was sent by this asker: the same reply mailbox AND the same
        vouched sender (a task sent where nothing vouched is no vouched sender's, and back)."""
        return (
            snapshot is not None
            and self.reply_to is not None
            and owner_of(snapshot) == self.reply_to
            and sender_of(snapshot) == self.sender
        )

    def named_by_another(self, snapshot: TaskJson | None) -> bool:
        """Whether this asker names the reply mailbox of the task's owner without being it: a
        vouched sender that is not the owner's. Nothing goes there on its word: an answer
        would land among the owner's own (a "not found" where the owner waits for its task)."""
        return (
            snapshot is not None
            and self.reply_to is not None
            and owner_of(snapshot) == self.reply_to
            and sender_of(snapshot) != self.sender
        )

    @property
    def scope(self) -> str | None:
        """The part of the task store this asker's tasks are kept in: its own where the broker
        vouches for its sender (``owned.<digest>.``: a task id is then this owner's alone), the
        one all askers share where nothing vouches (None: anyone may name any reply mailbox,
        so a scope of its own would keep nothing apart)."""
        return None if self.sender is None else f"{OWNED_KEY}{w.digest(self.key)}."

    @property
    def key(self) -> str:
        """One text per asker, for its cancel records and LangGraph threads (the reply mailbox
        alone where nothing vouches, as before senders were known)."""
        reply_to = self.reply_to or ""
        return reply_to if self.sender is None else f"{reply_to}\n{self.sender}"

    def metadata(self, agent: str) -> OwnerJson:
        """The task's ``metadata.mq9``: who owns it, and the agent that runs it."""
        meta: OwnerJson = {"replyTo": self.reply_to, "agent": agent}
        if self.sender is not None:
            meta["sender"] = self.sender
        return meta


async def tasks_in(client: Mq9Client, mailbox: str, context_id: str = "") -> list[TaskJson]:
    """The newest state of each task kept in ``mailbox`` (RobustMQ answers at most 100,
    oldest first), of one conversation when ``context_id`` is given."""
    try:
        found = await client.query(mailbox, tags=[w.TASK_TAG])
    except MailboxNotFound:
        return []
    tasks = []
    for msg in found:
        snapshot = _object(msg.payload) or {}
        if not w.is_valid_id(snapshot.get("id")):
            continue  # not a Task
        if not context_id or snapshot.get("contextId") == context_id:
            tasks.append(cast(TaskJson, snapshot))  # a Task: kept under the reserved root
    return tasks


def _cancel_key(task_id: str, by: Asker) -> str:
    # One record per asker: nobody else's cancel can replace (or stand for) the owner's.
    return f"{w.CANCEL_KEY}{task_id}.{w.digest(by.key)}"


class TaskStore:
    """The task states of the agent served at ``agent_mailbox`` (``mail.store_address``).

    A task is looked up as its asker's (``Asker.scope``): where the broker vouches for
    senders, under the asker's own keys, then (a task kept before task ids were their owner's)
    under the shared ``task.{id}``, taken only when that record is the asker's."""

    def __init__(self, client: Mq9Client, agent_mailbox: str) -> None:
        self.client = client
        self.mailbox = w.store_address(agent_mailbox)

    async def get(self, task_id: str, asker: Asker | None = None) -> TaskJson | None:
        """``asker``'s task ``task_id`` (None: not its, or none). Without an asker, or where
        nothing vouches, the task kept under the shared id, whoever owns it."""
        scope = asker.scope if asker is not None else None
        if scope is None:
            return await self._task(w.TASK_KEY + task_id)
        assert asker is not None
        own = await self._task(f"{scope}{w.TASK_KEY}{task_id}")
        return own if own is not None else await self._kept_before(task_id, asker)

    async def _task(self, key: str) -> TaskJson | None:
        # the store is under the reserved root: only the agent's server writes Tasks there
        return cast(TaskJson | None, await latest(self.client, self.mailbox, key))

    async def _kept_before(self, task_id: str, asker: Asker) -> TaskJson | None:
        """A task kept under the shared id before ids were their owner's: the asker's only
        (another's there is as if absent: it neither blocks nor shows the asker's)."""
        shared = await self._task(w.TASK_KEY + task_id)
        return shared if asker.owns(shared) else None

    async def put(self, snapshot: TaskJson) -> None:
        """Keep a state of a task, under its owner's key as the state's ``metadata.mq9`` says
        (where its later states and its owner find it)."""
        headers = w.event_headers(snapshot["id"], w.task_state(snapshot))
        owner = Asker(owner_of(snapshot), sender_of(snapshot))
        key = f"{owner.scope or ''}{w.TASK_KEY}{snapshot['id']}"
        # (no idempotency key, as ``deliver``: a state tried again replaces its twin)
        await keep(self.client, self.mailbox, key, snapshot, tags=[w.TASK_TAG], headers=headers)

    async def delivered(self, task_id: str, owner: Asker) -> int:
        """The number of the newest state of ``owner``'s task known to have reached its
        reply mailbox (0: none known): a request handed out again after its task stopped
        resends the stopped state only when it never got there."""
        scope = owner.scope or ""
        kept = await latest(self.client, self.mailbox, f"{scope}{DELIVERED_KEY}{task_id}")
        seq = (kept or {}).get("seq")
        return seq if isinstance(seq, int) else 0

    async def keep_delivered(self, snapshot: TaskJson, owner: Asker) -> None:
        """Note that ``snapshot`` (a stopped state) reached its owner's reply mailbox
        (what an idempotency key did for a resent stopped state, without one)."""
        key = f"{owner.scope or ''}{DELIVERED_KEY}{snapshot['id']}"
        await keep(self.client, self.mailbox, key, {"seq": w.seq_of(snapshot)})

    async def cancel_requested(self, task_id: str, owner: Asker) -> bool:
        """Whether the task's owner asked to cancel it (a cancel from anyone else is void)."""
        return await latest(self.client, self.mailbox, _cancel_key(task_id, owner)) is not None

    async def request_cancel(self, task_id: str, by: Asker) -> None:
        """Keep ``by``'s cancel of the task: it counts if ``by`` turns out to own it."""
        await keep(self.client, self.mailbox, _cancel_key(task_id, by), {"id": task_id})

    async def push_configs(self, task_id: str, owner: Asker) -> dict[str, JsonObject]:
        """The push notification configs of ``owner``'s task, by id: those kept under
        the shared id only for a task kept there before ids were their owner's, and its."""
        scope = owner.scope
        kept = await latest(self.client, self.mailbox, f"{scope or ''}{PUSH_KEY}{task_id}")
        if kept is None and scope is not None and await self._kept_before(task_id, owner):
            kept = await latest(self.client, self.mailbox, PUSH_KEY + task_id)
        configs = (kept or {}).get("configs")
        return (
            {k: v for k, v in configs.items() if isinstance(v, dict)}
            if isinstance(configs, dict)
            else {}
        )

    async def keep_push_configs(
        self, task_id: str, owner: Asker, configs: dict[str, JsonObject]
    ) -> None:
        key = f"{owner.scope or ''}{PUSH_KEY}{task_id}"
        await keep(self.client, self.mailbox, key, {"configs": configs})

    async def list(self, owner: Asker, context_id: str = "") -> list[TaskJson]:
        """The tasks ``owner`` sent (see ``tasks_in``): one state each, its newest (a task
        kept under the shared id before ids were their owner's, and under its owner's since)."""
        found = await tasks_in(self.client, self.mailbox, context_id)
        newest = {t["id"]: t for t in found if owner.owns(t)}  # oldest first: the last stands
        return list(newest.values())
