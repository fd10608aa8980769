"""What a publish must fit before it is written: nats-server's limits, checked on our side.

A publish the server cannot take is not refused alone: nats-server answers ``-ERR`` (a control
line over ``max_control_line``, a payload over ``max_payload``, a header block it cannot parse)
and closes the connection, and nats-py closes it for good (``_process_err``). A broker whose
connection a request could make it write such a publish on is one request from not serving
(a tag of a few kilobytes). ``publish_problem`` says what does not fit, in one line;
``fence`` makes a connection refuse such a publish (``refused(text)`` raised) instead of
writing it. The engines refuse what they can name first (broker/engine/sending.py); this is
the last line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

# nats-server's default max_control_line (its INFO does not say it): the longest line
# "HPUB <subject> <reply> <header bytes> <total bytes>" it reads
CONTROL_LINE = 4096
# nats-server's default max_pending: the bytes it queues for one connection before it closes
# it as a slow consumer ("Slow Consumer Detected: MaxPending of 67108864 Exceeded"). Its INFO
# does not say it; nats-server refuses a config whose max_payload is above it (server.go).
MAX_PENDING = 64 * 1024 * 1024
# What one answer of the broker, or its store's reads at once, may take of a connection's
# pending bytes: half, the other half room for what else arrives meanwhile (a
# request as large, another answer)
PENDING_SHARE = MAX_PENDING // 2
_HEADER_LINE = len("NATS/1.0\r\n") + len("\r\n")  # the block's first line and its end
_BAD_TOKEN = re.compile(r"[\s\x00-\x1f\x7f]")  # (whitespace or a control splits a line)
# A subject of plain tokens, as every one the store writes is: known good without a look at
# each token (this runs on every publish of the store's connection)
_PLAIN = re.compile(r"[\w$\-:+=@#%&!~^|,;?/]+(?:\.[\w$\-:+=@#%&!~^|,;?/]+)*", re.ASCII)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FENCED = "_mq9_fenced"
_GOOD_NAMES: set[str] = set()  # header names seen to be tokens (the store writes a few)
_NAMES_KEPT = 256


class PublishRefused(ValueError):
    """A publish that does not fit the server's limits, never written."""


def subject_problem(subject: str, what: str = "subject") -> str | None:
    """Why ``subject`` is no subject to publish on (tokens: non-empty, no wildcard, no
    whitespace), or None."""
    if _PLAIN.fullmatch(subject):
        return None
    if not subject:
        return f"an empty {what}"
    for token in subject.split("."):
        if not token:
            return f"the {what} {subject[:80]!r} has an empty token"
        if token in ("*", ">") or _BAD_TOKEN.search(token):
            return f"the {what} {subject[:80]!r} has a token no publish may carry"
    return None


def publish_problem(
    subject: str,
    reply: str,
    payload_size: int,
    headers: Mapping[str, str] | None,
    max_payload: int,
    more: int = 0,
    plain_reply: int = 0,
) -> str | None:
    """Why a publish would not fit (one line), or None when it does. ``more``: the bytes of
    header lines it will carry beside ``headers`` (names and values known good: an atomic
    batch's, ``nats_floor/jetstream/api.py``), counted without a dict made for them;
    ``plain_reply``: the bytes of a reply subject known good it will carry beside ``reply``
    (nats-py's request inboxes: not looked at again for each publish)."""
    problem = subject_problem(subject) or (reply and subject_problem(reply, "reply subject"))
    if problem:
        return problem
    block = more
    if headers:
        for name, value in headers.items():
            text = value if isinstance(value, str) else str(value)
            if name not in _GOOD_NAMES:
                if not _HEADER_NAME.fullmatch(name):
                    return f"a header name {name[:80]!r} that is no token"
                if len(_GOOD_NAMES) < _NAMES_KEPT:
                    _GOOD_NAMES.add(name)
            if "\r" in text or "\n" in text:
                return f"the header {name!r} holds a line break"
            # ": " and "\r\n"; (a value not plain ASCII: its bytes)
            block += len(name) + (len(text) if text.isascii() else len(text.encode())) + 4
    if block:
        block += _HEADER_LINE
    # "HPUB <subject> <reply> <block> <total>\r\n" (a subject not plain ASCII: its bytes)
    names = _size(subject) + _size(reply) + plain_reply
    return size_problem(len(subject), names, block, block + payload_size, max_payload)


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def size_problem(
    subject_length: int, names: int, block: int, total: int, max_payload: int
) -> str | None:
    """Why a publish would not fit, or None: its subject ``subject_length`` characters, it
    and the reply subject ``names`` bytes, its header block ``block`` bytes, headers and
    payload ``total``."""
    line = 10 + names + len(str(block)) + len(str(total))
    if line > CONTROL_LINE:
        return (
            f"a publish whose control line is {line} bytes (subject {subject_length}): "
            f"nats-server reads at most {CONTROL_LINE}"
        )
    if total > max_payload:
        return (
            f"a publish of {total} bytes ({block} of headers): the server takes at most "
            f"{max_payload} (max_payload)"
        )
    return None


def fence(connection: Any, refused: Callable[[str], Exception] = PublishRefused) -> None:
    """Make ``connection`` (nats-py's) raise ``refused(text)`` for a publish that does not fit,
    never writing it: its own ``publish`` and everything built on it (requests, JetStream,
    key-value). Once per connection; the max_payload is the one its server announced last."""
    if getattr(connection, _FENCED, False):
        return
    publish = connection.publish

    async def fenced(
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        problem = publish_problem(subject, reply, len(payload), headers, connection.max_payload)
        if problem is not None:
            raise refused(problem)
        await publish(subject, payload, reply, headers)

    connection.publish = fenced
    setattr(connection, _FENCED, True)
