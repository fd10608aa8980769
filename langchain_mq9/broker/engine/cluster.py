"""``ClusterEngine``: the mq9 commands answered over a ``ClusterStore``, the state kept in
JetStream (issue #72; docs/broker.md, "The JetStream store kept in the cluster").

The same rules and texts as ``BrokerEngine`` (its parsers, answers and error texts are used
as they are), over a store of data instead of the process's memory: nothing is held between
requests but what the store may drop, so any number of engines on one store answer as one
broker. No lock: each decision two engines could make differently is JetStream's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Mapping
from typing import Any

from ... import protocol as p
from ...protocol.errors import MailboxExists, Mq9Error, WireError, from_reply
from ...semantic.ranking import AgentEntry
from ..state.clock import Clock, system_clock
from ..state.mailbox import StoredMessage
from ..state.registry import AgentRegistry
from ..storage.base import StorageError
from ..storage.cluster import ClusterStore, Full, MailboxRecord, Mark
from .answers import EMPTY_ANSWER, capped, cut_answer, empty_wait, whole_answer
from .engine import (
    _DISCOVER_HEAD,
    _MSG_ID_ROOM,
    _OK,
    _SEARCH_LIMIT_FOR_ZERO,
    _SENT,
    LARGE_BODY,
    Command,
    Vouched,
    _read,
    _read_query,
    _stored_headers,
    _wrap_u64,
    command_for,
)
from .limits import BrokerLimits
from .owned import Requester, Undo, kept, succeeded
from .sending import CLUSTER, read_send

log = logging.getLogger("langchain_mq9.broker")

Headers = Mapping[str, str] | None
_GROUPS_KEPT = 65_536  # (group, mailbox) pairs an engine remembers holding a position
_DELETED = p.encode(p.DELETE_REPLY.write(error="", deleted=True))
_BEGINNING = Mark(0, 0)  # a log's first msg_id, read from its first sequence


class ClusterEngine:
    """Answers mq9 requests (``handle``) over ``store``; ``limits`` and ``search`` as
    ``BrokerEngine``'s. Time from ``clock`` (the servers' own clock writes create_times)."""

    def __init__(
        self,
        store: ClusterStore,
        *,
        clock: Clock = system_clock,
        limits: BrokerLimits | None = None,
        search: bool = True,
    ) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits or BrokerLimits()
        self.search = search
        # (group, log) pairs known to hold a position: a cache, so an ACK of a known group
        # asks nothing before its write
        self._groups: OrderedDict[tuple[str, str], None] = OrderedDict()
        # The search index of this engine: the bucket's registrations, each embedded once
        self._known: dict[tuple[str, str, int], AgentEntry] = {}
        # the --max-mailboxes the mailboxes bucket was given, once given: (limit,)
        self._bound: tuple[int | None, ...] = ()
        self._handlers = {
            p.MAILBOX_CREATE: self._create,
            p.MSG_SEND: self._send,
            p.MSG_FETCH: self._fetch,
            p.MSG_ACK: self._ack,
            p.MSG_QUERY: self._query,
            p.MSG_DELETE: self._delete,
            p.AGENT_REGISTER: self._register,
            p.AGENT_UNREGISTER: self._unregister,
            p.AGENT_REPORT: self._report,
            p.AGENT_DISCOVER: self._discover,
        }

    def now_second(self) -> int:
        return int(self.clock())

    @property
    def answer_limit(self) -> int | None:
        return self.limits.max_answer

    def _message_limit(self) -> int:
        limit = self.answer_limit
        return self.limits.max_payload if limit is None else min(self.limits.max_payload, limit)

    # -- entry point -----------------------------------------------------------------------

    async def handle(
        self, subject: str, headers: Headers, body: bytes, requester: Requester | None = None
    ) -> bytes:
        """Answer one mq9 request; never raises, every failure is an ``error`` reply. With
        ``requester`` (an enforcing broker's), its command's ownership (``Command.owned``):
        what the check asks about read from the cluster first (another broker may have made
        it a moment ago), then the check, the command, and its record kept."""
        try:
            command, target = command_for(subject)
            self._check_body_size(command, subject, body)
            handler = self._handlers.get(command.subject)
            if handler is None or (command.addressed and not target):
                raise Mq9Error(p.err_unknown_subject(subject))
            if requester is None:
                return await handler(target, headers, body)
            owned, policy, principal = command.owned, requester.policy, requester.principal
            named = await owned.names(target, body, LARGE_BODY)
            await owned.look_up(policy, principal, named, headers)
            refusal = owned.check(policy, principal, named, headers)
            if refusal is not None:
                return refusal
            # what another broker could decide differently, won in one step first (#77)
            refusal, undo = await owned.claim(policy, principal, named)
            if refusal is not None:
                return refusal
            given = Vouched(headers, principal) if owned.vouched else headers
            answer = await _claimed(handler(target, given, body), undo)
            return await kept(answer, owned.recorded(requester, named, headers, body, answer))
        except Mq9Error as exc:
            return p.encode(p.ERROR_REPLY.write(error=str(exc)))
        except StorageError as exc:
            return p.encode(p.ERROR_REPLY.write(error=str(exc)))
        except Exception as exc:
            log.exception("internal error on %r", subject, exc_info=exc)
            return p.encode(
                p.ERROR_REPLY.write(error=f"internal broker error: {type(exc).__name__}: {exc}")
            )

    def _check_body_size(self, command: Command, subject: str, body: bytes) -> None:
        limit = command.body_limit(self.limits)
        if limit is not None and len(body) > limit:
            raise Mq9Error(
                f"request body of {len(body)} bytes refused unread: this broker takes at most "
                f"{limit} bytes for {subject}"
            )

    async def _topic(self, address: str) -> MailboxRecord:
        """The log FETCH, QUERY and DELETE read (an expired mailbox's too)."""
        record = await self.store.mailbox(address, now=self.now_second())
        if record is None:
            raise Mq9Error(p.err_topic_missing(address))
        return record

    # -- mailboxes -------------------------------------------------------------------------

    async def _create(self, _target: str, _headers: Headers, body: bytes) -> bytes:
        request = _read(p.CREATE_REQUEST, body, "invalid MAILBOX.CREATE payload: ", empty_ok=True)
        name = request["name"]
        if name is None:
            address = p.new_address()
        else:
            problem = p.name_error(name)
            if problem:
                raise Mq9Error(problem)
            if len(name) > p.MAX_ADDRESS_LENGTH:
                raise Mq9Error(p.err_address_too_long(name))
            address = name
        ttl = p.DEFAULT_MAILBOX_TTL if request["ttl"] is None else request["ttl"]
        limit = self.limits.max_mailboxes
        if self._bound != (limit,):
            # (our choice) the bucket holds at most the bound's records, so the servers
            # refuse one more however many brokers create at once (#77); an expired mailbox
            # whose log is kept counts, its record replaced (not added) by a CREATE again
            await self.store.bound_mailboxes(limit)
            self._bound = (limit,)
        try:
            made = await self.store.create_mailbox(
                address, ttl=ttl, desc=request["desc"] or "", now=self.now_second()
            )
        except Full:
            raise Mq9Error(p.err_mailbox_limit(limit or 0)) from None
        if made is None:
            raise Mq9Error(p.err_mailbox_exists(address))
        return p.encode(p.CREATE_REPLY.write(error="", mail_address=address))

    # -- SEND ------------------------------------------------------------------------------

    async def _send(self, address: str, headers: Headers, body: bytes) -> bytes:
        now = self.now_second()
        record = await self.store.mailbox(address, now=now)
        if record is None or not record.live(now):
            raise Mq9Error(p.err_mailbox_missing(address))
        # the header rules are every engine's (sending.py); a client's own mq9-sender is not
        # kept: only a credentialed broker's stands
        sent = read_send(_stored_headers(headers), body, now, CLUSTER)
        message = sent.message
        limit = self._message_limit()
        # (a bound from lengths first: a message far below the limit is not encoded to know)
        if EMPTY_ANSWER + message.wire_size_bound() + _MSG_ID_ROOM > limit:
            size = EMPTY_ANSWER + message.wire_size() + _MSG_ID_ROOM
            if size > limit:
                raise Mq9Error(p.err_message_too_large(size, limit))
        room = self.limits.max_messages_per_mailbox
        if sent.due is not None:
            # (a delayed message is numbered when due, whatever the mailbox holds then: its
            # room is the mailbox's when the SEND is taken, as BrokerEngine's)
            if room is not None and await self.store.count(address) >= room:
                raise Mq9Error(p.err_mailbox_full(address, room))
            await self.store.hold(address, message, due=sent.due, now=now)
            return p.encode(p.SEND_REPLY.write(error="", msg_id=-1))
        try:
            # the room decided with the write itself: counted as of the head it expects
            # (numbering.py), so no number of brokers or SENDs at once passes it (#77)
            return _SENT % await self.store.append(address, message, now=now, room=room)
        except Full:
            assert room is not None  # (only a write given a room finds it full)
            raise Mq9Error(p.err_mailbox_full(address, room)) from None

    # -- FETCH and ACK ---------------------------------------------------------------------

    async def _fetch(self, address: str, _headers: Headers, body: bytes) -> bytes:
        request = _read(p.FETCH_REQUEST, body)
        config = request["config"] or {}
        num_msgs = config.get("num_msgs")
        num_msgs = p.DEFAULT_NUM_MSGS if num_msgs is None else num_msgs
        max_wait_ms = config.get("max_wait_ms")
        max_wait_ms = p.DEFAULT_MAX_WAIT_MS if max_wait_ms is None else max_wait_ms
        record, last = await asyncio.gather(self._topic(address), self.store.last(address))
        lanes = await self._read_group(record, last, request, num_msgs)
        if not lanes and max_wait_ms > 0:
            await asyncio.sleep(empty_wait(max_wait_ms))  # RobustMQ sleeps the whole wait
        if request["group_name"] is not None:
            return whole_answer(lanes, num_msgs, self.answer_limit)
        return cut_answer([m for lane in lanes for m in lane], self.answer_limit)

    async def _read_group(
        self, record: MailboxRecord, last: Mark | None, request: dict[str, Any], num_msgs: int
    ) -> list[list[StoredMessage]]:
        group = request["group_name"]
        start: Mark
        if group is None:
            start = await self._initial(record, last, request)
        else:
            position = await self.store.position(group, record)
            if request["force_deliver"] and position.committed_anywhere:
                # RobustMQ commits the reset position + 1 yet reads this answer from it
                start = await self._reset_target(record, last, request)
                await self.store.commit(group, record, _wrap_u64(start.msg_id + 1), start.seq)
            elif position.offset is not None:
                start = Mark(position.offset, position.seq)
            elif position.committed_anywhere:
                start = _BEGINNING  # committed on another mailbox: this lane's beginning
            else:
                start = await self._initial(record, last, request)
        if last is None or num_msgs <= 0:
            return []
        read = await self.store.read_lanes(
            record.name, start, num_msgs, upto=last.seq, now=self.now_second()
        )
        lanes: list[list[StoredMessage]] = []
        held = 0
        for lane in read:  # critical first; a lane is read only while fewer are held
            lanes.append(capped(lane))
            held += len(lanes[-1])
            if held >= num_msgs:
                break
        return lanes if held else []

    async def _initial(
        self, record: MailboxRecord, last: Mark | None, request: dict[str, Any]
    ) -> Mark:
        """Where a group with no committed offset starts (RobustMQ's start strategies)."""
        deliver = request["deliver"]
        if deliver == "earliest":
            # (RobustMQ's earliest offset is 0 until the retention removes the oldest: a read
            # from 0 finds what a read from there finds)
            return _BEGINNING
        if deliver == "from_id":
            return await self._clamp(record, last, request["from_id"] or 0)
        if deliver == "from_time":
            found = await self.store.first(record.name, at_time=request["from_time"] or 0)
            return found if found is not None else _BEGINNING
        return await self._end(record, last)  # latest: the newest message is still handed out

    async def _reset_target(
        self, record: MailboxRecord, last: Mark | None, request: dict[str, Any]
    ) -> Mark:
        if request["deliver"] == "from_time":
            found = await self.store.first(record.name, at_time=request["from_time"] or 0)
            return await self._clamp(record, last, found.msg_id if found is not None else 0)
        return await self._initial(record, last, request)

    async def _end(self, record: MailboxRecord, last: Mark | None) -> Mark:
        """RobustMQ's end offset: the newest msg_id written (0 when none was)."""
        if last is not None:
            return last
        return Mark(await self.store.last_id(record.name) or 0, 0)

    async def _clamp(self, record: MailboxRecord, last: Mark | None, offset: int) -> Mark:
        """``offset`` held within [0, end], as RobustMQ holds a ``from_id``."""
        end = await self._end(record, last)
        if offset >= end.msg_id:
            return end
        return Mark(offset, await self.store.seq_for(record.name, offset))

    async def _ack(self, _target: str, _headers: Headers, body: bytes) -> bytes:
        request = _read(p.ACK_REQUEST, body)
        address = request["mail_address"]  # the body's, not the subject's (RobustMQ)
        record = await self.store.mailbox(address, now=self.now_second())
        if record is None:
            raise Mq9Error(p.err_ack_mailbox_missing(address))
        group = request["group_name"]
        if len(group) > p.MAX_GROUP_NAME:
            raise Mq9Error(p.err_group_name_too_long(len(group)))
        msg_id = request["msg_id"]
        # where reads from past msg_id start: its sequence (cached, or the leader's)
        seq = await self.store.seq_for(record.name, msg_id)
        limit = self.limits.max_groups
        # (our choice) room under --max-groups for a group new on this mailbox, decided
        # with its first position's write (the log's count of groups written with it, #77);
        # a group known here, or no bound, is one write
        room = None if (group, record.log) in self._groups else limit
        try:
            await self.store.commit(group, record, _wrap_u64(msg_id + 1), seq, room=room)
        except Full:
            raise Mq9Error(p.err_group_limit(limit or 0, record.name)) from None
        self._know_group(group, record)
        return _OK

    def _know_group(self, group: str, record: MailboxRecord) -> None:
        self._groups[(group, record.log)] = None
        self._groups.move_to_end((group, record.log))
        while len(self._groups) > _GROUPS_KEPT:
            self._groups.popitem(last=False)

    # -- QUERY and DELETE ------------------------------------------------------------------

    async def _query(self, address: str, _headers: Headers, body: bytes) -> bytes:
        request = _read_query(body)
        limit = p.QUERY_CAP if request["limit"] is None else min(request["limit"], p.QUERY_CAP)
        record = await self._topic(address)
        now = self.now_second()
        if request["key"] is not None:
            message = await self.store.by_key(record.name, request["key"], now=now)
            found = [message][:limit] if message is not None else []
        elif request["tags"]:
            found = await self._by_tags(record, list(dict.fromkeys(request["tags"])), limit)
        else:
            last = await self.store.last(record.name)
            found = (
                []
                if last is None
                else capped(
                    await self.store.read(record.name, _BEGINNING, limit, upto=last.seq, now=now)
                )
            )
        return cut_answer(found, self.answer_limit)

    async def _by_tags(
        self, record: MailboxRecord, tags: list[str], limit: int
    ) -> list[StoredMessage]:
        """Each tag's messages through the store's tag index, a tag's own or one below it,
        in RobustMQ's order (by tag, then msg_id), each tag up to ``limit``; a message found
        by two tags answered once, where the first found it."""
        last = await self.store.last(record.name)
        if last is None:
            return []
        answers = await self.store.by_tags(
            record.name, tags, limit, upto=last.seq, now=self.now_second()
        )
        by_id: dict[int, StoredMessage] = {}
        for found in answers:
            for message in capped(found):
                by_id.setdefault(message.msg_id, message)
        return list(by_id.values())

    async def _delete(self, target: str, _headers: Headers, _body: bytes) -> bytes:
        address, dot, msg_id_text = target.rpartition(".")
        if not dot:
            raise Mq9Error(p.err_unknown_subject(p.MSG_DELETE + target))
        msg_id = p.header_u64(msg_id_text) if msg_id_text == msg_id_text.strip() else None
        if msg_id is None:
            raise Mq9Error(f"invalid msg_id: {msg_id_text}")
        record = await self._topic(address)
        await self.store.delete(record.name, msg_id)  # not there: "deleted" all the same
        return _DELETED

    # -- agent registry --------------------------------------------------------------------

    async def _register(self, _target: str, _headers: Headers, body: bytes) -> bytes:
        if not body:
            raise Mq9Error(p.ERR_REGISTER_EMPTY)
        try:
            card = p.a2a_card(p.loads(body))
        except WireError:
            card = None
        if card is not None:
            name, agent_info = card.get("name", ""), p.encode(card).decode()
        else:
            request = _read(p.REGISTER_REQUEST, body, "invalid AGENT.REGISTER payload: ")
            name, agent_info = request["name"], request["payload"]
        if not agent_info:
            raise Mq9Error(p.ERR_AGENT_INFO_EMPTY)
        size, limit = len(agent_info.encode()), self.limits.max_card_bytes
        if limit is not None and size > limit:
            raise Mq9Error(p.err_card_too_large(size, limit))
        entry = AgentEntry.make(name, agent_info, 0)
        listed = len(p.encode(p.DISCOVER_REPLY.write(error="", agents=[entry.listed()])))
        if listed > self._message_limit():
            raise Mq9Error(p.err_entry_too_large(listed, self._message_limit()))
        agents = self.limits.max_agents
        row = (name, agent_info, self.now_second())
        try:
            # the room decided with the registration: the registry's count written with it,
            # expecting its last sequence (#77)
            kept = await self.store.register(*row, room=agents)
        except Full:
            raise Mq9Error(p.err_agent_limit(agents or 0)) from None
        if kept and entry.card is not None:
            await self.store.index_put(entry.card_name, row)
        return _OK

    def _named(self, body: bytes, shape: p.Shape, command: str) -> dict[str, Any]:
        request = _read(shape, body, f"invalid {command} payload: ")
        if not request["name"]:
            raise Mq9Error(p.ERR_AGENT_NAME_EMPTY)
        return request

    async def _unregister(self, _target: str, _headers: Headers, body: bytes) -> bytes:
        request = self._named(body, p.UNREGISTER_REQUEST, "AGENT.UNREGISTER")
        if await self.store.unregister(request["name"]):  # an unknown name succeeds all the same
            # the row named by the registration, whatever card it held (RobustMQ)
            await self.store.index_drop(request["name"])
        return _OK

    async def _report(self, _target: str, _headers: Headers, body: bytes) -> bytes:
        request = self._named(body, p.REPORT_REQUEST, "AGENT.REPORT")
        await self.store.report(request["name"], request["report_info"] or "", self.now_second())
        return _OK

    async def _discover(self, _target: str, _headers: Headers, body: bytes) -> bytes:
        request = _read(p.DISCOVER_REQUEST, body, "invalid AGENT.DISCOVER payload: ", empty_ok=True)
        registry = await self._registry()
        if not (request["semantic"] or request["text"]):
            return self._listing(registry)
        if not self.search:
            raise Mq9Error(p.ERR_SEARCH_NOT_BUILT)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._search, request, registry)

    async def _registry(self) -> AgentRegistry:
        """The registrations and the search index as the buckets hold them now, each card
        embedded once by this engine (its index is a cache rebuilt from the bucket)."""
        rows, index_rows = await asyncio.gather(self.store.agents(), self.store.index_rows())
        known, self._known = self._known, {}
        registry = AgentRegistry()
        for row in rows:
            entry = known.get(row) or AgentEntry.make(*row)
            self._known[row] = entry
            registry.entries[entry.name] = entry
        indexed = []
        for row in index_rows:
            entry = self._known.get(row) or known.get(row) or AgentEntry.make(*row)
            self._known[row] = entry
            if entry.card is not None:
                indexed.append(entry)
        if self.search:  # (without search nothing ranks: no card is embedded, no model loads)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, _index, registry, indexed)
        return registry

    def _listing(self, registry: AgentRegistry) -> bytes:
        items: list[bytes] = []
        size = len(_DISCOVER_HEAD) + 2
        limit = self.answer_limit
        entries = registry.listing()
        for entry in entries:
            items.append(registry.listed(entry))
            size += len(items[-1]) + (len(items) > 1)
            if limit is not None and size > limit:
                raise Mq9Error(p.err_listing_too_large(len(entries), size, limit))
        return _DISCOVER_HEAD + b",".join(items) + b"]}"

    def _search(self, request: dict[str, Any], registry: AgentRegistry) -> bytes:
        limit = p.DEFAULT_DISCOVER_LIMIT if request["limit"] is None else request["limit"]
        first = ((max(request["page"] or 1, 1) - 1) * limit) & p.MAX_U32
        size = limit or _SEARCH_LIMIT_FOR_ZERO
        indexed = registry.indexed()
        if request["semantic"]:
            hits = registry.search_semantic(request["semantic"], indexed)
        else:
            hits = registry.search_text(request["text"], indexed)
        room = self._message_limit() - len(_DISCOVER_HEAD) - 2
        kept: list[bytes] = []
        for entry in hits[first : first + size]:
            item = p.encode(entry.found())
            room -= len(item) + (1 if kept else 0)
            if room < 0:
                break
            kept.append(item)
        return _DISCOVER_HEAD + b",".join(kept) + b"]}"


async def _claimed(answering: Awaitable[bytes], undo: Undo | None) -> bytes:
    """The answer ``answering`` gives; a claim made for it undone (``undo``) when the
    command was not done (a CREATE refused), except for a name that exists: the claim
    stands (its claimer made it through another broker at the same moment)."""
    try:
        answer = await answering
    except Mq9Error as exc:
        if undo is not None and not isinstance(from_reply(str(exc)), MailboxExists):
            await undo()
        raise
    except BaseException:
        if undo is not None:
            await undo()
        raise
    if undo is not None and not succeeded(answer):
        await undo()
    return answer


def _index(registry: AgentRegistry, indexed: list[AgentEntry]) -> None:
    """Index ``indexed`` in the order their rows were written (embedding each card not
    embedded before: on a worker thread)."""
    for entry in indexed:
        registry.put_index(entry)
