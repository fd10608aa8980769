"""The trace context a message carries, as text: W3C Trace Context (``traceparent``,
``tracestate``). Pure functions, the standard library only. (A tracer of runs reads and writes
its own headers: LangSmith's ``langsmith-trace`` is ``langchain_mq9.langsmith_runs``'s.)

A peer's headers are untrusted input (docs/tracing.md, "What a peer can do"): each is read
only if it is well formed and within bounds, otherwise ignored as if absent, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# The headers the platform writes itself (a tracer of runs adds its own); a model can set none
# of them (tools have no headers argument, and keys and tags cannot hold a line break:
# docs/security.md).
TRACE_HEADERS = (TRACEPARENT, TRACESTATE)

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
