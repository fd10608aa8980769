"""Secrets kept out of every text we show: messages, logs, and the repr of public objects."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# A URL's credentials run from its start (after "scheme://", or a word's start without a
# scheme) to the LAST "@" before the URL ends, as urllib (so nats-py) reads them: a password may
# hold unencoded @ : / # ? % and any other character but whitespace and "," (the server list
# separator, which open_transport splits on too: such a password goes in password=). The user stays
# (user:***@); a lone token is hidden whole (***@). A last "@" with nothing before it hides
# nothing and stays as written: a log line may quote the character itself ('@'), or a handle.
_WITH_SCHEME = re.compile(r"(?<=://)(?!@(?![^\s,]*@))(?:(?P<user>[^\s,:@]*):)?[^\s,]*@")
# Then URLs without a scheme, from a word's start and never across a "://" (a URL of the first
# kind, already redacted).
_WITHOUT_SCHEME = re.compile(
    r"(?<![^\s,'\"(<=])(?=[^'\"(<=])(?!@(?![^\s,]*@))"
    r"(?:(?P<user>[\w.%+-]*):(?!//))?(?:(?!://)[^\s,])*@"
)


def redact(text: str) -> str:
    """Hide the secrets in every URL of ``text``: ``nats://user:secret@host`` ->
    ``nats://user:***@host``, ``nats://token@host`` -> ``nats://***@host``."""

    def hide(match: re.Match[str]) -> str:
        return "***@" if match["user"] is None else f"{match['user']}:***@"

    return _WITHOUT_SCHEME.sub(hide, _WITH_SCHEME.sub(hide, text))


def describe(exc: BaseException) -> str:
    """An exception in one line for a message: ``TypeName: text``."""
    text = redact(str(exc).strip())  # nats-py and aiohttp errors may quote a server URL
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def redact_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the value of every secret option (``password``, ``token``, an mq9
    ``credential``: its id stays) hidden."""
    return {k: _hidden(k, v) if v else v for k, v in options.items()}


def _hidden(option: str, value: Any) -> Any:
    if option == "credential" and isinstance(value, str):
        return value.partition(":")[0] + ":***"  # the id names the agent; the secret is hidden
    return "***" if option in ("password", "token") else value
