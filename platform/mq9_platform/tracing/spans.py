"""OpenTelemetry spans around the client's operations, and the runs of the tracer
of runs registered with ``register_run_tracing`` (LangSmith's, from ``langchain_mq9``).

OpenTelemetry is not imported here: it is used only once the application has imported it
(``sys.modules``), for no trace can be active in a process that never did. Spans follow
OpenTelemetry's messaging conventions (``send`` PRODUCER, ``receive`` CLIENT, ``process``
CONSUMER; system ``mq9``, the mailbox as destination). A ``send`` or ``receive`` joins a trace
already active and never starts one; a ``process`` continues the sender's, so the receiver's
work hangs under the send that asked for it, hours later and from another process.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from functools import cache
from typing import TYPE_CHECKING, Any

from mq9_wire.protocol import Message

from .context import TRACEPARENT, TRACESTATE, peer_trace, traceparent

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Tracer

    from .runs import RunTracing

SYSTEM = "mq9"
_TRACER = "mq9_platform"
# The tracer of runs, if one is registered: a global read, not a call, so that a process
# without one (a platform-only program) pays nothing for the seam on its SENDs.
_runs: RunTracing | None = None


def register_run_tracing(runs: RunTracing | None) -> RunTracing | None:
    """Put ``runs``'s runs around the client's operations from now on (None: no runs), in
    place of the tracer registered before, which is returned (to put it back)."""
    global _runs
    before, _runs = _runs, runs
    return before


def run_tracing() -> RunTracing | None:
    """The tracer of runs registered, if any."""
    return _runs


def _current_span() -> Span | None:
    """The active span, if OpenTelemetry is in use and one is (valid: sampled or not)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    span: Span = trace.get_current_span()
    return span if span.get_span_context().is_valid else None


class Sending:
    """Around one SEND (a context manager): what it carries (``headers``) and reports once
    answered (``sent``). This one, for no trace, carries and reports nothing."""

    headers: Mapping[str, str] = {}

    def __enter__(self) -> Sending:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, trace: Any) -> None:
        pass

    def sent(self, msg_id: int) -> None:
        """The broker stored the message under ``msg_id``."""


UNTRACED = Sending()  # every SEND outside a trace: nothing to carry or report


class _TracedSend(Sending):
    """A SEND in a trace: the ``send`` span's context (when a span is active) and the current
    run's headers go with the message. A class, not a generator context: every traced SEND
    comes here, and a generator costs more (bench/HOTPATH.md)."""

    def __init__(
        self, mailbox: str, parent: Span | None, run_headers: Mapping[str, str] | None
    ) -> None:
        headers: dict[str, str] = {}
        self._span: Span | None = None
        if parent is not None:
            # a leaf: nothing runs under it but the request, so it is never made current
            self._span = _start_span(f"send {mailbox}", "PRODUCER", _attributes("send", mailbox))
            headers = _w3c_headers(self._span.get_span_context())
        if run_headers:
            headers.update(run_headers)
        self.headers = headers

    def __exit__(self, kind: Any, exc: BaseException | None, trace: Any) -> None:
        if self._span is not None:
            _end_span(self._span, exc)

    def sent(self, msg_id: int) -> None:
        if self._span is not None and msg_id >= 0:
            self._span.set_attribute("messaging.message.id", str(msg_id))


def sending(mailbox: str) -> Sending:
    """Around one SEND: a ``send`` span under the active one, whose context (and the current
    run's, with a tracer of runs registered) the message carries. Nothing when no trace is
    active. Make it only as the ``with`` starts (the span starts here)."""
    parent, runs = _current_span(), _runs
    if runs is not None:
        run = runs.current_run()
        if run is not None:
            return _TracedSend(mailbox, parent, runs.run_headers(run))
    return UNTRACED if parent is None else _TracedSend(mailbox, parent, None)


def receiving(mailbox: str, group: str | None) -> AbstractContextManager[list[Message]]:
    """Around one FETCH (under an active span only): a ``receive`` span, linked to the send of
    each message handed out (the caller fills the yielded list). Without a span, a plain
    list: every fetch comes here, and a context of ours costs more."""
    if _current_span() is None:
        return nullcontext([])
    return _Receiving(mailbox, group)


class _Receiving:
    """A FETCH under way; its ``receive`` span is made as it ends, with its links (the
    conventions' advice: a sampler sees them, and ten ``add_link`` calls cost twice as much)
    and its start time from when the FETCH began. A leaf, like a send: never made current."""

    def __init__(self, mailbox: str, group: str | None) -> None:
        self._mailbox, self._group = mailbox, group
        self._started = time.time_ns()
        self._got: list[Message] = []

    def __enter__(self) -> list[Message]:
        return self._got

    def __exit__(self, kind: Any, exc: BaseException | None, trace: Any) -> None:
        from opentelemetry.trace import Link

        attributes = _attributes("receive", self._mailbox)
        if self._group is not None:
            attributes["messaging.consumer.group.name"] = self._group
        attributes["messaging.batch.message_count"] = len(self._got)
        senders = (_peer_span_context(message.header) for message in self._got)
        span = _start_span(
            f"receive {self._mailbox}",
            "CLIENT",
            attributes,
            links=[Link(sender) for sender in senders if sender is not None],
            start_time=self._started,
        )
        _end_span(span, exc)


def processing(mailbox: str, message: Message) -> AbstractContextManager[None]:
    """Around the handling of one message: a ``process`` span, child of the span that sent
    it (or of the active one), and the sender's run (with a tracer of runs registered) as
    the parent of runs started inside. Nothing when neither the message nor this process
    has a trace."""
    sender = _peer_span_context(message.header)
    runs = _runs
    run = None if runs is None else runs.peer_run(message.header)
    if sender is None and run is None and _current_span() is None:
        return nullcontext()
    return _process_span(mailbox, message, sender, runs, run)


@contextmanager
def _process_span(
    mailbox: str,
    message: Message,
    sender: SpanContext | None,
    runs: RunTracing | None,
    run: object | None,
) -> Iterator[None]:
    with ExitStack() as stack:
        if runs is not None and run is not None:
            stack.enter_context(runs.under_peer_run(run))
        if sender is not None or _current_span() is not None:
            attributes = _attributes("process", mailbox)
            attributes["messaging.message.id"] = str(message.msg_id)
            stack.enter_context(_Span(f"process {mailbox}", "CONSUMER", attributes, sender))
        yield


def _attributes(operation: str, mailbox: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": mailbox,
    }


class _Span:
    """A span of this package's tracer, current from its making until the end of the
    ``with`` (under ``parent`` if given). Attached and ended by hand: the API's context
    managers cost as much again. Make it only as the ``with`` starts."""

    def __init__(
        self,
        name: str,
        kind: str,
        attributes: dict[str, Any],
        parent: SpanContext | None = None,
    ) -> None:
        from opentelemetry import context, trace

        under = None
        if parent is not None:
            under = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        self.span = _start_span(name, kind, attributes, under)
        self._token = context.attach(trace.set_span_in_context(self.span))

    def __enter__(self) -> Span:
        return self.span

    def __exit__(self, kind: Any, exc: BaseException | None, trace: Any) -> None:
        from opentelemetry import context

        context.detach(self._token)
        _end_span(self.span, exc)


def _start_span(
    name: str,
    kind: str,
    attributes: dict[str, Any],
    context: Context | None = None,
    links: list[Link] | None = None,
    start_time: int | None = None,
) -> Span:
    """A span of this package's tracer, started now (or at ``start_time``), under the span in
    ``context`` (by default the active one); not made current."""
    return _tracer().start_span(
        name,
        context=context,
        kind=_kind(kind),
        attributes=attributes,
        links=links,
        start_time=start_time,
    )


def _end_span(span: Span, exc: BaseException | None) -> None:
    """End ``span``; an exception marks it failed: recorded, ``error.type`` naming its class
    (the conventions)."""
    if exc is not None:
        from opentelemetry.trace import Status, StatusCode

        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.set_attribute("error.type", type(exc).__qualname__)
    span.end()


@cache
def _kind(name: str) -> SpanKind:
    from opentelemetry.trace import SpanKind

    return SpanKind[name]


@cache
def _tracer() -> Tracer:
    """This package's tracer, made once (a ProxyTracer until the application sets a tracer
    provider, which it then follows)."""
    from opentelemetry import trace

    return trace.get_tracer(_TRACER)


def _w3c_headers(span: SpanContext) -> dict[str, str]:
    headers = {TRACEPARENT: traceparent(span.trace_id, span.span_id, span.trace_flags.sampled)}
    if span.trace_state:  # most have none: written out only if there is one
        headers[TRACESTATE] = span.trace_state.to_header()
    return headers


def _peer_span_context(header: Mapping[str, str]) -> SpanContext | None:
    if "opentelemetry.trace" not in sys.modules:
        return None
    peer = peer_trace(header)
    if peer is None:
        return None
    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    state = TraceState.from_header([peer.tracestate]) if peer.tracestate else None
    flags = TraceFlags(TraceFlags.SAMPLED if peer.sampled else TraceFlags.DEFAULT)
    return SpanContext(peer.trace_id, peer.span_id, True, flags, state)
