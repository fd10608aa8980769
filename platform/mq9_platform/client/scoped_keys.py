"""``caller_key``: the idempotency key a carrier sends to the broker for one of its callers.

A carrier (mq9-mcp, the A2A gateway) speaks to the broker as ONE identity for all its callers,
and the broker holds a key per identity and mailbox: a key passed on as the caller gave it is
every caller's. Another caller sending the same key (``bid-7``) to the same mailbox is then
answered with the first caller's msg_id when it guesses the payload right and refused when it
guesses wrong (it reads her message through her key), and a key it takes first refuses hers.
The gateway names each tenant's keys with the tenant (its reply mailbox, in ``once_id``'s
digest); this names any carrier's caller's key the same way: a digest of the caller and the key.
One caller's key sent again is the same key (the broker's duplicate, stored once); another
caller's same key is another key.
"""

from __future__ import annotations

from mq9_wire.protocol.names import digest

# What the digest is taken of, apart from any other digest of the same names
_SCOPE = "idempotency key"


def caller_key(caller: str, key: str) -> str:
    """``key`` as the broker holds it for ``caller`` (``""``: a carrier's one caller, whose
    keys go as they are): a digest of the two (32 hex digits, so it fits wherever the key
    did: a tool's 64 characters, the broker's 256 bytes)."""
    if not caller:
        return key
    return digest("\n".join((_SCOPE, caller, key)))
