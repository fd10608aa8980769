"""``langchain_mq9.a2a`` is ``mq9_platform.a2a`` since 0.5.0: this path warns and
hands out its names, and its submodules, for one release (``langchain_mq9/_moved.py``); its
``server`` (a LangGraph graph served) is ``langchain_mq9.serving``'s (``a2a/server.py`` here)."""

from .._moved import forward

__getattr__ = forward(__name__, "mq9_platform.a2a")
