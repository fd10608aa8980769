"""One trace across agents (issue #44, docs/tracing.md): the W3C Trace Context and LangSmith's
run carried in the headers of the messages this package sends, and continued by what reads
them. Imports only the protocol; OpenTelemetry and LangSmith only when the application uses
them (the ``otel`` extra installs OpenTelemetry's API)."""

from .context import TRACE_HEADERS, PeerTrace, peer_run, peer_trace
from .spans import UNTRACED, Sending, processing, receiving, sending

__all__ = [
    "TRACE_HEADERS",
    "UNTRACED",
    "PeerTrace",
    "Sending",
    "peer_run",
    "peer_trace",
    "processing",
    "receiving",
    "sending",
]
