"""How an error or a log quotes a value: model input can be megabytes, and errors go to the
model."""

from __future__ import annotations

from .limits import QUOTE_CHARS


def quoted(value: object, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` for an error message, cut after about ``limit`` characters."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, (str, list, dict)) else ""
    return f"{text[:limit]}…{size}"


def clipped(text: str, limit: int) -> str:
    """``text`` cut to at most about ``limit`` characters, keeping its start and its end
    (where the hints are)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} …[{len(text) - 2 * half} characters cut]… {text[-half:]}"
