"""What a tool says when a call fails: the broker's words plus the next step, or which argument
to fix. Every failure a model (or an MCP client) can act on is an ``OperationError``."""

from __future__ import annotations

from pydantic import ValidationError

from mq9_wire.protocol import clipped, quoted
from mq9_wire.protocol.errors import (
    ClusterUnavailable,
    ConnectFailed,
    InvalidAddress,
    ListingTooLarge,
    MailboxExists,
    MailboxNotFound,
    Mq9Error,
    PayloadTooLarge,
    RequestTimeout,
    StorageMissing,
)

# The most of a broker's error text a tool result repeats (its hint comes on top).
MAX_ERROR_CHARS = 600
# A call that timed out while this process loads the search model (memory://'s broker is
# in this process; "unreachable" was wrong there)
LOADING_MODEL = (
    "loading the search model in this process (the first agent_register or agent_discover "
    "waits for it, seconds on a busy machine); "
)


class OperationError(Exception):
    """A failure the model (or MCP client) should see and can act on; never a crash."""


_ADDRESS_RULES = "use lowercase letters, digits and dots, e.g. 'team.reports', and call again"
_FIND_IT = (
    "no agent reads this address. Find the recipient's mailbox with agent_discover, or ask "
    "the user; do not create it, nobody would read it"
)
_EXISTS = (
    "it is there already: use it as it is, or call create_mailbox with another name (or none, "
    "for a private one)"
)


def _missing_hint(address: str | None, own: str | None) -> str:
    if own and address == own:
        return "this is your own mailbox and it does not exist yet: call agent_register first"
    yours = f" (yours is '{own}')" if own else ""
    return f"check the address{yours}: agent_discover shows each agent's mailbox"


def explain(
    exc: Mq9Error,
    *,
    operation: str | None = None,
    address: str | None = None,
    own: str | None = None,
) -> str:
    """The broker's words (cut to ``MAX_ERROR_CHARS``: they may quote what the model gave) plus
    the next step. ``operation`` failed on mailbox ``address``; ``own`` is the toolkit's
    agent_mailbox. A missing (or malformed) recipient of ``send_message`` leads to
    ``agent_discover``, never to creating the mailbox."""
    text = clipped(exc.message, MAX_ERROR_CHARS)
    if isinstance(exc, MailboxNotFound):
        hint = _FIND_IT if operation == "send_message" else _missing_hint(address, own)
    elif isinstance(exc, InvalidAddress):
        hint = _FIND_IT if operation == "send_message" else _ADDRESS_RULES
    elif isinstance(exc, MailboxExists):
        hint = _EXISTS
    elif isinstance(exc, (PayloadTooLarge, ListingTooLarge)):
        return text  # its words say already what to send or ask instead
    elif isinstance(exc, StorageMissing) or (isinstance(exc, ClusterUnavailable) and exc.stored):
        return text  # its words say what to do, and it is not "try again"
    elif exc.retryable:  # a failed connect already says what is wrong: do not say it twice
        cause = "" if isinstance(exc, ConnectFailed) else "the mq9 broker is unreachable or busy; "
        if isinstance(exc, RequestTimeout) and _loading_model():
            cause = LOADING_MODEL  # an in-process broker's first REGISTER or search waits on it
        hint = f"{cause}try again shortly"
    else:
        return text
    return f"{text} — {hint}"


def _loading_model() -> bool:
    from mq9_wire.semantic import loading  # (its models load only when asked for)

    return loading()


def unexpected(operation: str, exc: ValueError) -> str:
    """What the model reads when ``operation`` raised a ``ValueError`` no rule above explains:
    a value it could not take (a name it derives from the address too long, ...)."""
    said = clipped(str(exc), MAX_ERROR_CHARS)
    return f"{operation} could not be done: {said}. Try other arguments, or tell the user."


def explain_validation(error: ValidationError) -> str:
    """A validation failure in words a model can act on."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ())) or "input"
        got = f" (got {quoted(item['input'])})" if item.get("type") != "missing" else ""
        problems.append(f"{where}: {item.get('msg', 'invalid')}{got}")
    return str(invalid("; ".join(problems)))


def invalid(problem: str) -> OperationError:
    return OperationError(f"Invalid arguments: {problem}. Fix them and call the tool again.")
