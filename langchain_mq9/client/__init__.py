"""The mq9 client: ``Mq9Client`` over a swappable transport (NATS, or the in-process broker
for ``memory://``), the guard that keeps nats-py alive under malformed frames, one connection
per event loop for the tools, and the redaction of credentials in everything it prints."""

from .client import Message, Mq9Client

__all__ = ["Message", "Mq9Client"]
