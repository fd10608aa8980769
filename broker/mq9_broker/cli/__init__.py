"""The command lines: `mq9-dev-broker` (serve, credentials, state)."""

from .dev_broker import main

__all__ = ["main"]
