"""``langchain_mq9.tracing`` is ``mq9_platform.tracing`` since 0.5.0: this path warns
and hands out its names, and its submodules, for one release (``langchain_mq9/_moved.py``).
LangSmith's half stayed in the LangChain face (``langchain_mq9.langsmith_runs``): its names are
handed out from there."""

from .._moved import forward
from ..langsmith_runs import LANGSMITH_TRACE, peer_run

__getattr__ = forward(__name__, "mq9_platform.tracing")

__all__ = ["LANGSMITH_TRACE", "peer_run"]
