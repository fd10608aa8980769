"""The values a request carries, checked as RobustMQ checks them (or more strictly, where it
would silently change them): mailbox names, priorities, integers, group names."""

from __future__ import annotations

import re
import secrets
from enum import Enum

from .error_texts import (
    ERR_NAME_CHARS,
    ERR_NAME_EDGES,
    ERR_NAME_EMPTY,
    err_address_too_long,
    err_empty_segment,
    err_invalid_address,
)
from .errors import InvalidAddress, InvalidArgument
from .limits import MAX_ADDRESS_LENGTH, MAX_GROUP_NAME, MAX_U64
from .quoting import quoted
from .serde import utf8

_DIGITS = re.compile(r"\+?[0-9]{1,20}")


class Priority(str, Enum):
    """Message priority. Handed out critical first, then urgent, then normal; FIFO inside one."""

    NORMAL = "normal"
    URGENT = "urgent"
    CRITICAL = "critical"

    def __str__(self) -> str:
        return self.value


# Highest first: the order in which a FETCH reads its priority lanes.
PRIORITY_ORDER = (Priority.CRITICAL, Priority.URGENT, Priority.NORMAL)


def name_error(name: str) -> str | None:
    """Why RobustMQ's CREATE refuses ``name`` as a mailbox name, or None if it takes it."""
    if not name:
        return ERR_NAME_EMPTY
    if not _NAME_CHARS.issuperset(name):
        return ERR_NAME_CHARS
    if name[0] == "." or name[-1] == ".":
        return ERR_NAME_EDGES
    return None


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.")


def is_valid_address(value: object) -> bool:
    return isinstance(value, str) and name_error(value) is None


def check_address(value: object) -> str:
    """Return ``value`` if a mailbox can have it as its address and a NATS subject can carry
    it, else raise ``Mq9Error`` (the client's check before any request)."""
    if not isinstance(value, str) or name_error(value) is not None:
        raise InvalidAddress(err_invalid_address(value))
    if len(value) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress(err_address_too_long(value))
    if ".." in value:
        raise InvalidAddress(err_empty_segment(value))
    return value


def parse_priority(value: object) -> Priority:
    """The priority named by ``value`` (a ``Priority`` or its name, any case); no fallback.
    The client is strict on purpose: RobustMQ silently turns an unknown name into normal."""
    if isinstance(value, Priority):
        return value
    if isinstance(value, str):
        try:
            return Priority(value.strip().lower())
        except ValueError:
            pass
    raise InvalidArgument(f"invalid priority {quoted(value)}: use normal, urgent or critical")


def check_int(name: str, value: object, low: int = 0, high: int = 2**63 - 1) -> int:
    """An integer option (ttl, delay, limit, msg_id, ...) that must lie in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(
            f"invalid {name} {quoted(value)}: must be an integer from {low} to {high}"
        )
    return value


def check_group_name(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_GROUP_NAME:
        raise InvalidArgument(
            f"invalid group_name {quoted(value)}: a non-empty string of at most "
            f"{MAX_GROUP_NAME} chars"
        )
    return utf8("group_name", value)


def header_u64(text: str) -> int | None:
    """A header number as RobustMQ reads it (Rust's ``u64::from_str``), or None if it is not
    one: RobustMQ then ignores the header."""
    text = text.strip()
    if not _DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if number <= MAX_U64 else None


def new_address() -> str:
    """A broker-generated address, shaped like RobustMQ's (20 characters of base32hex, as an
    xid) but drawn at random: 100 bits, so a private mailbox's address cannot be guessed."""
    alphabet = "0123456789abcdefghijklmnopqrstuv"
    return "".join(secrets.choice(alphabet) for _ in range(20))
