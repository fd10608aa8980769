"""0.5's private path of the command lines' shared parts, kept for one release:
``mq9_wire.command_line`` now."""

from .moved import forward

__getattr__ = forward(__name__, "mq9_wire.command_line")
