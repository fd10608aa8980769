"""What one broker will hold: ``BrokerLimits``, the bounds the engine enforces (our choice:
RobustMQ has none), and ``Carried``, the answer limit they and the transports serving the engine
set together."""

from __future__ import annotations

from dataclasses import dataclass

from mq9_wire import protocol as p
from mq9_wire.nats_floor.fits import MAX_PENDING, PENDING_SHARE


@dataclass(frozen=True)
class BrokerLimits:
    """What one broker will hold (our choice: RobustMQ has no such limits); None: no limit.

    ``max_payload``: the largest message SEND accepts, counted as it takes room in a FETCH
    answer; also bounds a registry entry and a DISCOVER answer. ``max_answer``: the largest
    FETCH or QUERY answer (a NATS connection serving the engine bounds it too, see
    ``BrokerEngine.answer_limit``). ``max_card_bytes``: A2A cards run to a few KiB; 64 KiB
    leaves room for many skills while a 1 MiB DISCOVER listing still holds a dozen of the
    largest. ``max_agents``: 10,000 bounds the cards at about 640 MiB and keeps a search over
    all of them well inside a request timeout (bench 4d/4e). ``max_groups``: consumer groups ACK
    creates **per mailbox** (kept until ``drop_group`` or the retention empties the log), so a
    client making names up fills only the mailbox it floods; 1,000 is far more than the agents
    reading one mailbox use, each a few hundred bytes."""

    max_payload: int = p.DEFAULT_MAX_PAYLOAD
    max_mailboxes: int | None = None
    max_messages_per_mailbox: int | None = None
    max_answer: int | None = None
    max_card_bytes: int | None = 64 * 1024
    max_agents: int | None = 10_000
    # The registrations one agent a --credentials broker vouches for holds at once (its
    # UNREGISTER gives one back): one agent filling its share is refused alone, where before it
    # could fill max_agents and refuse every other agent's new name. 100 is far more names
    # than one service registers; an open broker vouches for nobody, and has max_agents alone
    max_agents_per_sender: int | None = 100
    max_groups: int | None = 1_000
    # The largest body of a command that is parsed (CREATE, FETCH, ACK, QUERY, UNREGISTER,
    # REPORT, DISCOVER): names, numbers, tags and a search query, for which 64 KiB is ample (a
    # larger one would only make the broker parse it, and a semantic search tokenize it). A
    # REGISTER body may add a card of max_card_bytes with every byte escaped (``\u0000``: 6).
    max_request: int = 64 * 1024
    # How long a keyed SEND's key is kept per mailbox: every SEND with it within this many
    # seconds answers the first one's msg_id (docs/protocol.md, "Exactly once"). Ten minutes
    # cover a client's resends and a broker's restart; each key costs the store a record
    # (bench/RESULTS.md)
    idempotency_window: int = 600
    # The keys a broker whose store is in this process (memory, SQLite) holds at once, in
    # all and per sender it vouched for (--credentials): a new key past either is refused in
    # one line (err_idempotency_keys_full). What a key costs held is measured in bench/RESULTS.md
    # (the memory 100,000 of them take follows from it); 10,000 a sender is 16 keyed SENDs a
    # second for the whole window. The cluster store keeps keys in its stream (Nats-TTL) and
    # counts a sender's in JetStream (storage/jetstream/key_counts.py); its bound in all is
    # the servers' storage.
    max_keys: int | None = 100_000
    max_keys_per_sender: int | None = 10_000
    # The keys one client of an open broker holds at once: its address where
    # nats-server vouches for one (the open cluster's service import), else its reply inbox
    # (pacing.client_of). Half the bound in all (the waiting room's share of an address): one
    # client filling its keys leaves the other half to everyone else, and a served agent taking
    # 10 tasks a second (6 keys each, 36,000 in the window) fits
    max_keys_per_address: int | None = 50_000


# -- what a transport carries ---------------------------------------------------------------


class Carried:
    """The answer limit of an engine served by transports: the smallest of
    ``limits.max_answer`` and every serving transport's largest reply (``carry``)."""

    limits: BrokerLimits

    def __init__(self) -> None:
        # Each serving transport's largest reply (replaced whole: read without a lock)
        self._carriers: dict[object, int] = {}

    def carry(self, carrier: object, max_bytes: int | None) -> None:
        """``carrier``, a transport serving the engine, carries replies of at most
        ``max_bytes``; None: it serves no more."""
        carriers = dict(self._carriers)
        if max_bytes is None:
            carriers.pop(carrier, None)
        else:
            carriers[carrier] = max_bytes
        self._carriers = carriers

    @property
    def answer_limit(self) -> int | None:
        """The smallest of ``limits.max_answer`` and every transport's largest reply, which is
        at most ``PENDING_SHARE`` (half of what nats-server queues for a connection
        before it closes it as a slow consumer); None: no limit."""
        bounds = [min(carried, PENDING_SHARE) for carried in self._carriers.values()]
        if self.limits.max_answer is not None:
            bounds.append(self.limits.max_answer)
        return min(bounds, default=None)

    def message_bound(self, room: int = 0) -> tuple[int, str]:
        """The most bytes one message may take in a FETCH answer, and what sets it (as a
        refusal names it). ``room``: what a store writes beside a message's answer bytes
        within the servers' limits (``SendLimits.entry_room``)."""
        bounds = [(self.limits.max_payload, "this broker's --max-payload")]
        if self.limits.max_answer is not None:
            bounds.append((self.limits.max_answer, "this broker's largest answer (max_answer)"))
        beside = f", less {room} for the subject and headers its store adds" if room else ""
        for carried in self._carriers.values():
            if carried > PENDING_SHARE:
                why = (
                    f"half the {MAX_PENDING} bytes nats-server queues for a connection by "
                    f"default, its max_pending{beside}"
                )
                bounds.append((PENDING_SHARE - room, why))
            else:
                bounds.append((carried - room, f"the servers' max_payload of {carried}{beside}"))
        return min(bounds, key=lambda bound: bound[0])

    def _message_limit(self) -> int:
        """The most room a message, a registry entry or a DISCOVER search answer may take."""
        limit = self.answer_limit
        return self.limits.max_payload if limit is None else min(self.limits.max_payload, limit)
