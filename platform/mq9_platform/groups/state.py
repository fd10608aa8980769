"""What one reader of a consumer group knows, and what it decides from it: pure state, no I/O.

``GroupReader`` (reader.py) does the I/O; the rules that keep a message from being lost or
handed out twice live here, so tests/platform/groups/test_reader_state.py checks them without a
broker.

RobustMQ's rules behind it (docs/protocol-commands.md §5.3-5.4): a FETCH reads the lanes critical,
urgent, normal from the group's position S, each up to ``asked`` messages, and stops once it
holds ``asked``; an ACK X moves every lane to X + 1; the broker leases nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from mq9_wire import protocol as p
from mq9_wire.protocol import PRIORITY_ORDER, Message, Priority
from mq9_wire.protocol.errors import Mq9Error

# The largest payload a message can have (NATS's default max_payload, assumed in force wherever
# messages were sent). A lane read holding more than LANE_READ_BYTES minus this may have been
# cut by RobustMQ's per-read byte cap; one holding less was not.
LARGEST_MESSAGE = p.DEFAULT_MAX_PAYLOAD


@dataclass
class ReaderState:
    """One reader's bookkeeping above its floor."""

    floor: int = -1  # every id <= floor is done (handled, or behind the group's start position)
    pending: set[int] = field(default_factory=set)  # handed out here, not done yet
    handled: set[int] = field(default_factory=set)  # done above the floor, here or by a worker
    held: set[int] = field(default_factory=set)  # under another live worker's lease
    committed: int | None = None  # the last msg_id this reader acked
    last_answer: list[Message] = field(default_factory=list)
    asked: int = 0
    # create_time of the newest message seen in any answer. The broker numbers and stamps
    # messages in one order, and the floor passes only ids an answer showed: so a message at or
    # below the floor newer than this is a new one under a reused id (a log the broker lost).
    newest_time: int = -1
    # The messages of the answers above the floor, by msg_id: their create_time and priority.
    seen: dict[int, Message] = field(default_factory=dict, repr=False)
    # The largest msg_id seen in any answer before the last one: those messages existed before
    # the last FETCH began, so each lane it read in full covers them.
    known_before: int = -1
    known: int = -1
    passed_unacked: bool = False  # the floor passed a seen message since the last ack
    # Past a backlog (docs/groups.md): by lane, the last msg_id of the run of done messages it
    # starts with, sent with the next FETCH (``skip_through``: the bundled broker reads that
    # lane after it; RobustMQ ignores it). ``skipped``: what the last answer left out for it,
    # known done, by lane (empty when the broker read every lane from the position).
    skips: dict[Priority, int] = field(default_factory=dict)
    skipped: dict[Priority, list[Message]] = field(default_factory=dict, repr=False)
    honoured: bool = False  # the last answer read past the skips

    # -- an answer -------------------------------------------------------------------------

    def ask(self, num_msgs: int) -> int:
        """How many messages to ask for so that ``num_msgs`` new ones can come: the answer
        starts at the group's position, and what this reader holds, handled or sees held by
        others above it fills the higher lanes first (but for the done runs a broker that
        reads past them leaves out)."""
        busy = len(self.handled) + len(self.pending) + len(self.held)
        if self.honoured:
            skips = self.skip_through()
            busy -= sum(len(self._run(lane, skips.get(lane))) for lane in PRIORITY_ORDER)
        return min(num_msgs + max(busy, 0), p.MAX_NUM_MSGS)

    def skip_through(self) -> dict[Priority, int]:
        """By lane, the last msg_id of the run of done messages above the floor that the lane
        begins with, as the last answer (with what it left out) showed the lane: a broker
        that reads each lane after it (``skip_through``) answers what a reader needs whatever
        backlog of handled messages of a higher priority waits above an older message of a
        lower one (which alone would hold the group's position back)."""
        skips: dict[Priority, int] = {}
        for priority in PRIORITY_ORDER:
            last = None
            for m in self.lane(priority):
                if m.msg_id <= self.floor:
                    continue
                if not self.is_done(m.msg_id):
                    break
                last = m.msg_id
            if last is not None:
                skips[priority] = last
        return skips

    def lane(self, priority: Priority) -> list[Message]:
        """``priority``'s lane in the last answer, with what it left out (done) before it."""
        read = [m for m in self.last_answer if m.priority is priority]
        return [*self.skipped.get(priority, []), *read]

    def _run(self, priority: Priority, through: int | None) -> list[Message]:
        """The messages seen of ``priority`` above the floor up to ``through``."""
        if through is None:
            return []
        run = [m for i, m in self.seen.items() if self.floor < i <= through]
        return sorted((m for m in run if m.priority is priority), key=lambda m: m.msg_id)

    def went_back(self, answer: Iterable[Message]) -> bool:
        """The answer holds a message this reader acked past: the group's position went back
        behind this reader's ack (another reader's late ack, or a cluster node whose idea of the
        position is older). Acking ``committed`` again puts it where it was."""
        if self.committed is None:
            return False
        return any(m.msg_id <= self.committed and m.create_time <= self.newest_time for m in answer)

    def reused_ids(self, answer: Iterable[Message]) -> list[int]:
        """Ids at or below the floor carried by messages newer than any this reader saw:
        the broker's log went back and hands out new messages under old ids."""
        if self.floor < 0:
            return []
        return [
            m.msg_id for m in answer if m.msg_id <= self.floor and m.create_time > self.newest_time
        ]

    def accept(self, answer: list[Message], asked: int) -> list[Message]:
        """Take in the broker's answer to a FETCH of ``asked``; return its messages this reader
        has neither handed out, nor seen done, nor seen held elsewhere, in the broker's order."""
        self.last_answer, self.asked = answer, asked
        # A broker that ignores the skips (RobustMQ) reads every lane from the position: a
        # lane then holds a message its skip passed. Else each lane left its run out.
        passed = any(m.msg_id <= self.skips.get(m.priority, -1) for m in answer)
        self.honoured = bool(self.skips) and not passed
        self.skipped = {}
        if self.honoured:
            self.skipped = {lane: self._run(lane, self.skips.get(lane)) for lane in PRIORITY_ORDER}
        self.newest_time = max([self.newest_time, *(m.create_time for m in answer)])
        self.known_before = self.known
        self.known = max([self.known, *(m.msg_id for m in answer)])
        for m in answer:
            if m.msg_id > self.floor:
                self.seen[m.msg_id] = m
        # A message held elsewhere that a lane read to its end no longer holds is behind the
        # group's position (a worker acked past it) or gone: nobody will be handed it again.
        whole = self.whole_lanes()
        present = {m.msg_id for m in answer}
        gone = [i for i in self.held if i not in present and self.seen[i].priority in whole]
        self.mark_done(gone)
        return [m for m in answer if self.is_new(m.msg_id)]

    def whole_lanes(self) -> set[Priority]:
        """The priorities whose lane the last answer read to its end (as far as the messages
        that existed before that FETCH go)."""
        whole_below = p.LANE_READ_BYTES - LARGEST_MESSAGE
        whole: set[Priority] = set()
        count = 0
        for priority in PRIORITY_ORDER:
            if count >= self.asked:
                break  # this lane and the ones after it were not read
            lane = [m for m in self.last_answer if m.priority is priority]
            if len(lane) < self.asked and sum(len(m.payload) for m in lane) <= whole_below:
                whole.add(priority)
            count += len(lane)
        return whole

    def is_new(self, msg_id: int) -> bool:
        return (
            msg_id > self.floor
            and msg_id not in self.handled
            and msg_id not in self.pending
            and msg_id not in self.held
        )

    def is_done(self, msg_id: int) -> bool:
        return msg_id <= self.floor or msg_id in self.handled

    # -- what happens to messages ----------------------------------------------------------

    def hand_out(self, msg_ids: Iterable[int]) -> None:
        for msg_id in msg_ids:
            self.held.discard(msg_id)
            self.pending.add(msg_id)

    def check_done(self, msg_ids: Iterable[int]) -> None:
        for msg_id in msg_ids:
            p.check_int("msg_id", msg_id)
            if not (msg_id in self.pending or self.is_done(msg_id)):
                raise Mq9Error(f"msg_id {msg_id} was not handed out by this reader: fetch it first")

    def mark_done(self, msg_ids: Iterable[int]) -> None:
        """``msg_ids`` are done: handled here, or (lease records) by another worker."""
        for msg_id in msg_ids:
            self.pending.discard(msg_id)
            self.held.discard(msg_id)
            if msg_id > self.floor:
                self.handled.add(msg_id)

    def mark_held(self, msg_ids: Iterable[int]) -> None:
        """Another live worker holds these: not done, and not for this reader."""
        self.held.update(i for i in msg_ids if i > self.floor and i not in self.handled)

    def release_held(self, msg_ids: Iterable[int]) -> None:
        """Their holder's lease is gone: they may be handed out here again."""
        self.held.difference_update(msg_ids)

    # -- acking ----------------------------------------------------------------------------

    def advance(self) -> int | None:
        """Move the floor up to the safe horizon; return the msg_id to ack, if any."""
        horizon = self.horizon()
        if horizon > self.floor:
            self.floor = horizon
            passed = [self.seen.pop(i) for i in list(self.seen) if i <= horizon]
            self.handled = {i for i in self.handled if i > horizon}
            # Only an ack that passes a message this reader saw moves the group: below the
            # first it saw, the group's position is there already, and acking it would only
            # race the acks of other readers.
            self.passed_unacked |= bool(passed)
        if self.passed_unacked and (self.committed is None or self.floor > self.committed):
            return self.floor
        return None

    def acked(self, msg_id: int) -> None:
        self.committed = msg_id if self.committed is None else max(self.committed, msg_id)
        self.passed_unacked = False

    def horizon(self) -> int:
        """The largest id H such that every message with an id <= H is done, from what the
        last answer proves; never less than the floor.

        1. All three lanes start at the group's position S. The broker reads a lane only while
           it holds fewer than ``asked``; a lane read returns up to ``asked`` of its messages
           from S, and stops before the one that would take its payload above LANE_READ_BYTES
           (RobustMQ). A lane that returned fewer than ``asked`` and at most LANE_READ_BYTES -
           LARGEST_MESSAGE bytes was read to its end; any other may go on after its last id; a
           lane not read may hold any id from S on: then this rule proves nothing. A lane read
           to its end covers only the messages that existed when it was read: RobustMQ reads the
           lanes one after another, so a later lane may return a message written after an
           earlier lane was read, while a message of the earlier lane's priority written in
           between went unseen. So a full lane vouches for the ids seen before this FETCH and
           in the lanes read up to it, no further.
        2. Ids right above the floor that are all in the answer and done are done, whatever
           lanes were skipped: a message in the answer is in no other lane.
        Never past a message this reader or another worker still holds.
        """
        answer, asked = self.last_answer, self.asked
        # (a lane's run of done messages a broker left out counts as read, not as held)
        ids = [m.msg_id for lane in self.skipped.values() for m in lane] + [
            m.msg_id for m in answer
        ]
        horizon = self.floor
        whole = self.whole_lanes()
        held_count, skipped, bound = 0, False, max([self.known_before, *ids])
        covered = self.known_before
        for priority in PRIORITY_ORDER:
            lane = [m.msg_id for m in self.lane(priority)]
            if held_count >= asked:
                skipped = True
                continue
            covered = max([covered, *lane])
            bound = min(bound, covered if priority in whole else max(lane))
            held_count += sum(1 for m in answer if m.priority is priority)
        if not skipped:  # an empty answer too: nothing from S on, so nothing below is waiting
            waiting = [i for i in ids if not self.is_done(i)]
            horizon = max(horizon, min([bound, *(i - 1 for i in waiting)]))
        present = set(ids)
        run = self.floor
        while run + 1 in present and self.is_done(run + 1):
            run += 1
        horizon = max(horizon, run)
        busy = self.pending | self.held
        if busy:
            horizon = min(horizon, min(busy) - 1)
        return max(horizon, self.floor)


def read_through(answer: list[Message], asked: int) -> float:
    """The largest msg_id up to which a FETCH of ``asked`` without a group holds every message
    from its start on (``math.inf``: all there is; -1: nothing is sure). A lane read whole
    holds all of its own; one cut short (by number or by RobustMQ's 30 MiB a read), those up
    to its last; a lane not read because the answer was full before it, none. A mailbox's pages
    (operations/pages.py: the toolkit's query_messages, the console's pages and counts) read it
    this way."""
    whole = ReaderState(last_answer=answer, asked=asked).whole_lanes()
    through, held = math.inf, 0
    for priority in PRIORITY_ORDER:
        lane = [m.msg_id for m in answer if m.priority is priority]
        if held >= asked:
            return -1
        if priority not in whole:
            through = min(through, max(lane, default=-1))
        held += len(lane)
    return through
