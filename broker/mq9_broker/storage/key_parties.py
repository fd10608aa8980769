"""Whose an idempotency key is, as every store counts it, and the words said to a sender
past a bound: the stores in this process (sent_keys.py) and the cluster store
(jetstream/key_counts.py) both read them here, so neither imports the other.

A key is its sender's: a broker that vouches for the sender keeps it under
``scoped_key(sender, key)``. A carrier's caller counts against its share of its
sender's keys and its sender's bound both (``caller_party``).
"""

from __future__ import annotations

SCOPE = "\n"  # between a sender and its key: no header value (so no key) holds a newline
# Which bound a new key met, as said to its sender: its own alone, no count (a
# server speaking for many callers, a gateway's tenant, must learn nothing of the others)
PARTY_FULL = "you hold as many keys as one sender may"
ALL_FULL = "this broker holds as many keys as it may"
# A carrier's caller past the share its sender gave it (``caller_party``): its own alone
CALLER_FULL = "you hold as many keys as your share of your carrier's"
# The bound in all, for a key no party is counted for (an open broker's client
# nats-server vouches for no address of): nothing there tells one client's keys from
# another's (a reply inbox is any client's to name), so the bound in all is everyone's, and
# the remedy is the operator's (said to the client, to pass on)
OPEN_FULL = f"{ALL_FULL}, telling no client's keys apart: its operator's remedy is --credentials"


def scoped_key(sender: str | None, key: str) -> str:
    """The key a store keeps for ``sender``'s SEND keyed ``key``: its own, whoever else uses
    ``key`` (``sender`` None: the key as sent, one space for every unvouched sender)."""
    return key if sender is None else f"{sender}{SCOPE}{key}"


def key_sender(scoped: str) -> str | None:
    """The sender a kept key is scoped to (``scoped_key``'s), None for an unscoped one."""
    sender, scope, _ = scoped.partition(SCOPE)
    return sender if scope else None


def caller_party(sender: str, caller: str, share: int) -> str:
    """The party a carrier's caller is (``sender`` vouched for, ``caller`` named by
    it, with a ``share`` of its keys): its keys count against the share and the sender's
    bound both. Counted per sender and caller, whatever share each send names: replicas of
    a carrier naming different shares for one caller still count its keys once."""
    return f"{sender}{SCOPE}{caller}{SCOPE}{share}"


def of_caller(party: str) -> tuple[str, str, int] | None:
    """A ``caller_party``'s sender, its count's name (sender and caller) and its share;
    None for any other party."""
    parts = party.split(SCOPE)
    if len(parts) != 3:
        return None
    return parts[0], f"{parts[0]}{SCOPE}{parts[1]}", int(parts[2])
