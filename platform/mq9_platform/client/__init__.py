"""The mq9 client: ``Mq9Client`` over a swappable transport (NATS, or the in-process broker
for ``memory://``), one connection per event loop for the tools, and how it logs in. The
guard that keeps nats-py alive under malformed frames and the redaction of credentials are
the NATS floor's (``nats_floor``), which the broker stands on too."""

from .client import Message, Mq9Client

__all__ = ["Message", "Mq9Client"]
