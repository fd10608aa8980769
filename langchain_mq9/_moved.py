"""0.4's paths of the platform's parts (``langchain_mq9.client`` is ``mq9_platform.client`` since
0.5.0, and so are ``groups``, ``operations``, ``a2a``, ``wake`` and ``tracing``), kept for one
release through ``mq9_wire.moved``, with the commands their modules run as."""

from __future__ import annotations

from functools import partial

from mq9_wire import moved

COMMANDS = {
    "mq9_platform.wake": "mq9-wake",
    "mq9_platform.wake.cli": "mq9-wake",
    "mq9_platform.a2a.gateway_cli": "mq9-a2a-gateway",
}

# An old package's ``__getattr__``, with these commands (a partial: no frame of its own between
# the warning and the import that gave rise to it)
forward = partial(moved.forward, commands=COMMANDS)
