"""``langchain_mq9.wake`` is ``mq9_platform.wake`` since 0.5.0: this path warns
and hands out its names, and its submodules, for one release (``langchain_mq9/_moved.py``)."""

from .._moved import forward

__getattr__ = forward(__name__, "mq9_platform.wake")
