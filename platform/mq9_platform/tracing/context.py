"""The trace context a message carries, as text: W3C Trace Context (``traceparent``,
``tracestate``) and LangSmith's ``langsmith-trace``. Pure functions, the standard library only.

A peer's headers are untrusted input (docs/tracing.md, "What a peer can do"): each is read
only if it is well formed and within bounds, otherwise ignored as if absent, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
LANGSMITH_TRACE = "langsmith-trace"
# The headers this package writes itself; a model can set none of them (tools have no
# headers argument, and keys and tags cannot hold a line break: docs/security.md).
TRACE_HEADERS = (TRACEPARENT, TRACESTATE, LANGSMITH_TRACE)

# W3C Trace Context §3.2: version 00 is exactly this; a version we do not know is ignored.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# §3.3: at most 32 list members, key=value each; 512 characters is what a vendor must
# propagate at least, and all we keep (a longer one is dropped, as §3.3.1.1 allows).
MAX_TRACESTATE = 512
MAX_TRACESTATE_MEMBERS = 32
_TRACESTATE_MEMBER = re.compile(
    r"(?:[a-z][a-z0-9_*/-]{0,255}|[a-z0-9][a-z0-9_*/-]{0,240}@[a-z][a-z0-9_*/-]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
# LangSmith's dotted order: one "<UTC time><run id>" segment per run from the root down.
_DOTTED_SEGMENT = r"\d{8}T\d{12}Z[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
MAX_RUN_DEPTH = 64
_DOTTED_ORDER = re.compile(rf"{_DOTTED_SEGMENT}(?:\.{_DOTTED_SEGMENT}){{0,{MAX_RUN_DEPTH - 1}}}")


@dataclass(frozen=True, slots=True)
class PeerTrace:
    """A sender's W3C trace context, checked: ids as numbers, flags, and its tracestate (None
    when absent or malformed: §3.3.1.1 keeps the traceparent then)."""

    trace_id: int
    span_id: int
    sampled: bool
    tracestate: str | None = None


def traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def peer_trace(header: Mapping[str, str]) -> PeerTrace | None:
    """The W3C context in a message's headers, or None (absent, malformed, all-zero ids)."""
    found = _TRACEPARENT.fullmatch(header.get(TRACEPARENT, ""))
    if found is None:
        return None
    trace_id, span_id = int(found[1], 16), int(found[2], 16)
    if not trace_id or not span_id:  # §3.2.2.3-4: all zeros is invalid
        return None
    return PeerTrace(trace_id, span_id, int(found[3], 16) & 1 == 1, _tracestate(header))


def _tracestate(header: Mapping[str, str]) -> str | None:
    value = header.get(TRACESTATE)
    if not value or len(value) > MAX_TRACESTATE:
        return None
    members = [m.strip() for m in value.split(",") if m.strip()]
    if len(members) > MAX_TRACESTATE_MEMBERS:
        return None
    if not all(_TRACESTATE_MEMBER.fullmatch(m) for m in members):
        return None
    keys = [m.partition("=")[0] for m in members]
    return ",".join(members) if members and len(set(keys)) == len(keys) else None


def peer_run(header: Mapping[str, str]) -> str | None:
    """The sender's LangSmith run (its dotted order), or None when absent or malformed: a
    time that is no date (LangSmith would raise on it) included."""
    value = header.get(LANGSMITH_TRACE, "")
    if not _DOTTED_ORDER.fullmatch(value):
        return None
    try:
        for segment in value.split("."):
            datetime.strptime(segment[:22], "%Y%m%dT%H%M%S%fZ")
    except ValueError:
        return None
    return value
