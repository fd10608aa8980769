"""LangSmith's runs across agents (docs/tracing.md): a message sent inside a
run carries the run's place (``langsmith-trace``, its dotted order), and the runs started
while a message is handled have the sender's run as their parent.

LangSmith is LangChain's tracer, so this is the LangChain face's: the platform's tracing knows
only OpenTelemetry and a seam for a tracer of runs (``mq9_platform.tracing.RunTracing``), and
importing ``langchain_mq9`` registers this one there. LangSmith itself is imported only once
the application has (``sys.modules``), or when a message carrying a run is handled.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from mq9_platform.tracing import register_run_tracing, run_tracing

# The header name is the wire's: peers of every version read and write this one.
LANGSMITH_TRACE = "langsmith-trace"
# LangSmith's dotted order: one "<UTC time><run id>" segment per run from the root down.
_DOTTED_SEGMENT = r"\d{8}T\d{12}Z[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
MAX_RUN_DEPTH = 64
_DOTTED_ORDER = re.compile(rf"{_DOTTED_SEGMENT}(?:\.{_DOTTED_SEGMENT}){{0,{MAX_RUN_DEPTH - 1}}}")


def peer_run(header: Mapping[str, str]) -> str | None:
    """The sender's LangSmith run (its dotted order), or None when absent or malformed: a
    time that is no date (LangSmith would raise on it) included. A peer's headers are
    untrusted input (docs/tracing.md, "What a peer can do")."""
    value = header.get(LANGSMITH_TRACE, "")
    if not _DOTTED_ORDER.fullmatch(value):
        return None
    try:
        for segment in value.split("."):
            datetime.strptime(segment[:22], "%Y%m%dT%H%M%S%fZ")
    except ValueError:
        return None
    return value


class LangSmithRuns:
    """LangSmith as the platform's tracer of runs (``mq9_platform.tracing.RunTracing``)."""

    def current_run(self) -> Any:
        """The current LangSmith run tree, when LangSmith is in use and tracing is on."""
        helpers = sys.modules.get("langsmith.run_helpers")
        if helpers is None:
            return None
        run = helpers.get_current_run_tree()  # a context variable: asked first, as it is cheap
        if run is None:
            return None  # (tracing_is_enabled reads the tracing context and the environment)
        from langsmith.utils import tracing_is_enabled

        return run if tracing_is_enabled() else None

    def run_headers(self, run: Any) -> dict[str, str]:
        # Only the run's place: its baggage holds the sender's project and replicas
        # (endpoints, keys), which are nobody else's business.
        return {LANGSMITH_TRACE: run.dotted_order}

    def peer_run(self, header: Mapping[str, str]) -> str | None:
        """The sender's run, when this process traces to LangSmith: a message that carries one
        may be the first thing this process handles, so LangSmith is imported for it then."""
        run = peer_run(header)
        if run is None:
            return None
        try:
            from langsmith.utils import tracing_is_enabled
        except ImportError:
            return None
        return run if tracing_is_enabled() else None

    def under_peer_run(self, run: object) -> AbstractContextManager[None]:
        """LangSmith's tracing context as it is, the sender's run its parent: nothing else of
        the sender (no baggage is read), so the project, the client and its endpoint and key
        stay this process's own."""
        from langsmith.run_helpers import get_tracing_context, tracing_context
        from langsmith.run_trees import RunTree

        own = get_tracing_context()
        project = {"project_name": own["project_name"]} if own["project_name"] else {}
        parent = RunTree.from_dotted_order(str(run), client=own["client"], **project)
        own.update(parent=parent, distributed_parent_id=None)
        context: AbstractContextManager[None] = tracing_context(**own)
        return context


RUNS = LangSmithRuns()
# Once per process, and never over a tracer of runs the application registered itself.
if run_tracing() is None:
    register_run_tracing(RUNS)
