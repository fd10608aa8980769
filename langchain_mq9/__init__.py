"""LangChain tools and an mq9 client for persistent agent mailboxes and an agent registry."""

from .client import Consumer, Message, Mq9Client
from .protocol import Mq9Error, Priority

__version__ = "0.1.0"

__all__ = ["Consumer", "Message", "Mq9Client", "Mq9Error", "Priority", "__version__"]
