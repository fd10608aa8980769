"""Consumer groups on the client: ``GroupReader`` (a group's fetch/done cycle), ``Consumer``
(a background loop), the pure decisions they take (reader state, leases) and the dead-letter
mailbox that ends a poison message's redeliveries."""

from .dead_letters import DeadLetter
from .reader import Consumer, GroupReader, Replayed, replay

__all__ = ["Consumer", "DeadLetter", "GroupReader", "Replayed", "replay"]
