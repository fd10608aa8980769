"""The servers' half of routing each mailbox to one broker (the brokers' half is
``serving/partitions.py``): an account's subject mappings sending each mailbox command to
``$mq9.P.<k>.AI.MSG.<command>.<address>``, ``<k>`` the ``partition()`` of the address's tokens.

A mailbox name may hold dots, so an address is one or more tokens, and nats-server's mapping
functions take ``*`` wildcards only (a ``>`` cannot be hashed): one mapping per command and
number of tokens, up to ``DEPTH``. A name of more tokens is not mapped: it goes to
``$mq9.AI.>`` as before, where every broker serves it (right, with renumbered writes when
brokers write it at once). DELETE's last token is the msg_id, left out of the hash, so that a
DELETE goes where the mailbox's SENDs go. CREATE and the AGENT commands are not mapped (no
mailbox numbering to keep on one broker).
"""

from __future__ import annotations

COUNT = 64  # serving/partitions.py's COUNT: the brokers hold the partitions the servers map to
DEPTH = 8  # the most tokens of a mapped mailbox name
COMMANDS = ("SEND", "FETCH", "ACK", "QUERY")  # then DELETE, its msg_id one token more
PREFIX = "$mq9.P"


def _mapping(command: str, tokens: int, hashed: int) -> str:
    wildcards = ".".join(["*"] * tokens)
    parts = ",".join(str(i) for i in range(1, hashed + 1))
    to = ".".join(f"{{{{wildcard({i})}}}}" for i in range(1, tokens + 1))
    source = f"$mq9.AI.MSG.{command}.{wildcards}"
    return f'"{source}": "{PREFIX}.{{{{partition({COUNT},{parts})}}}}.AI.MSG.{command}.{to}"'


def partition_mappings(depth: int = DEPTH) -> list[str]:
    """The mapping lines (``"source": "destination"``) of an account's ``mappings`` block."""
    lines = []
    for tokens in range(1, depth + 1):
        lines += [_mapping(command, tokens, tokens) for command in COMMANDS]
        lines.append(_mapping("DELETE", tokens + 1, tokens))
    return lines


def mappings_block(indent: str = "  ", depth: int = DEPTH) -> str:
    """``mappings { ... }`` for a nats-server config: at the top level for the global account,
    or inside an account (the brokers' account, ``AGENTS``, on the open cluster: a service
    import from ``CLIENTS`` is mapped by it too)."""
    inner = "\n".join(f"{indent}  {line}" for line in partition_mappings(depth))
    return f"{indent}mappings {{\n{inner}\n{indent}}}\n"


if __name__ == "__main__":  # the block an operator's accounts.conf includes (docs/deploy.md)
    print(mappings_block(), end="")
