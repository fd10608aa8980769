"""Consumer groups on the client: ``GroupReader`` (a group's fetch/done cycle), ``Consumer``
(a background loop), the pure decisions they take (reader state, leases) and the dead-letter
mailbox that ends a poison message's redeliveries."""

from .reader import Consumer, GroupReader

__all__ = ["Consumer", "GroupReader"]
