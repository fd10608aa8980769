"""The bundled broker's count of a mailbox, ``$mq9.AI.MSG.COUNT.<mailbox>``: how many
messages each priority's lane holds, and the newest msg_id. mq9 answers no count, and a read
from an id answers the most urgent lane first, so a mailbox with more urgent messages than a
read carries hides its normal ones from every read of the protocol: the console counts to the
end with this where a broker answers it, and page by page (saying how far) where not
(RobustMQ answers nothing on the subject).

Each store keeps what a COUNT answers as it writes, so a COUNT walks no mailbox: the
stores in this process count each lane as messages come and go (``Mailbox.live_counts``) and
each mailbox's delayed messages as they are held and released; the cluster store asks the
servers, which count the subjects of a lane (a cost that grows with the lane, in the servers:
serving/serve.py has a requester's COUNTs there take turns as the costly requests do). With the
counts, ``scheduled`` (delayed messages held, not yet due) and ``next_due`` (the second the
soonest is due; null when none), for the console.

A read, owned as a QUERY (an enforcing broker lets the agents who may QUERY a mailbox count
it). Its entry joins the engine's table (``COMMANDS``) when this module is imported, which the
engine package does (its ``__init__``)."""

from __future__ import annotations

from typing import Any

from mq9_wire import protocol as p
from mq9_wire.protocol.subjects import MSG_COUNT

from . import owned as owning
from .engine import COMMANDS, Engine
from .rules import Command, as_is
from .sending import Headers


async def count(engine: Engine[Any], address: str, _headers: Headers, _body: bytes) -> bytes:
    """``address``'s lanes counted by its store (every live message, as a read finds them)."""
    record = await engine._topic(address)  # an unknown mailbox: the text a QUERY answers
    answer = await engine.store.counted(record.name, now=engine.now_second())
    counts, last, (scheduled, next_due) = answer
    newest = None if last is None else last.msg_id
    return p.encode(
        {
            "error": "",
            "counts": counts,
            "newest_id": newest,
            "scheduled": scheduled,
            "next_due": next_due,
        }
    )


COUNT = Command(MSG_COUNT, count, as_is, owned=owning.QUERY)
COMMANDS.setdefault(MSG_COUNT, COUNT)
