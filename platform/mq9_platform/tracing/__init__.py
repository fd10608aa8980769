"""One trace across agents (docs/tracing.md): the W3C Trace Context carried in the
headers of the messages this package sends, and continued by what reads them. Imports only the
protocol; OpenTelemetry only when the application uses it (the ``otel`` extra installs its API).

A tracer of runs plugs in through ``register_run_tracing`` (a ``RunTracing``): its runs then go
with the messages too. LangSmith's is the LangChain face's, registered when ``langchain_mq9`` is
imported; the platform imports no framework.
"""

from .context import TRACE_HEADERS, PeerTrace, peer_trace
from .runs import RunTracing
from .spans import (
    UNTRACED,
    Sending,
    processing,
    receiving,
    register_run_tracing,
    run_tracing,
    sending,
)

__all__ = [
    "TRACE_HEADERS",
    "UNTRACED",
    "PeerTrace",
    "RunTracing",
    "Sending",
    "peer_trace",
    "processing",
    "receiving",
    "register_run_tracing",
    "run_tracing",
    "sending",
]
