"""Whether the NATS server refused the client's credentials, from what nats-py raised.

Its own file (not the protocol's errors): it reads a nats-py error, and the protocol uses only
the standard library (tests/project/test_layout.py).
"""

from __future__ import annotations


def refused_credentials(exc: BaseException) -> bool:
    """Whether a nats-py error says the server refused the credentials: its AuthorizationError,
    or (while connecting) a plain error quoting the server's -ERR 'Authorization Violation'."""
    from nats.errors import AuthorizationError  # nats-py loads only when a NATS URL is used

    return isinstance(exc, AuthorizationError) or "authorization" in str(exc).lower()
