"""The seam for a tracer of runs (docs/tracing.md): the platform knows
OpenTelemetry's spans, which are no framework's, and nothing of any framework's runs. A tracer
of runs (LangSmith's, which ``langchain_mq9`` registers when it is imported) plugs in here, and
the client's SEND and the handling of a message put its runs next to their spans.

One tracer at most: a process traces its runs to one place. Registered, it is asked before
every SEND (``current_run``) and for every message handled (``peer_run``), so both must be
cheap when no run is current and the message carries none.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Protocol


class RunTracing(Protocol):
    """What the platform asks of a tracer of runs. A run is the tracer's own object, opaque
    here: only what ``current_run`` or ``peer_run`` hand out is handed back."""

    def current_run(self) -> object | None:
        """The run current in this context, when tracing is on (None otherwise)."""
        ...

    def run_headers(self, run: object) -> Mapping[str, str]:
        """The headers a message sent inside ``run`` carries for it: the run's place, nothing
        the receiver should not see (no keys, no endpoints)."""
        ...

    def peer_run(self, header: Mapping[str, str]) -> object | None:
        """The sender's run in a message's headers, when this process traces runs: None when
        there is none, or it is malformed (a peer's headers are untrusted input)."""
        ...

    def under_peer_run(self, run: object) -> AbstractContextManager[None]:
        """A context in which the runs started have ``run`` (from ``peer_run``) as parent,
        going to this process's own project with its own client, not the sender's."""
        ...
