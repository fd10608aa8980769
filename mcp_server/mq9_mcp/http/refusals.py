"""Why a request's bearer token was refused, from the verifier that refused it to the 401 that
says so (``auth._refusal_body``): the SDK's bearer middleware keeps only "no user". The
verifier runs in the request's own context, just before the 401 is written, so a context
variable carries it; each verification starts with none (``AnyOf``). The words name what was
wrong (expired, another audience, another issuer, a signature that does not verify), never the
token nor a secret."""

from __future__ import annotations

import logging
from contextvars import ContextVar

log = logging.getLogger("mq9_mcp")

REFUSAL: ContextVar[str | None] = ContextVar("mq9_mcp_refusal", default=None)


def refused(why: str) -> None:
    """Say (and log, at info) why this request's token is refused; the caller returns None."""
    why = why[:300]  # what it quotes (a key id, an algorithm) is the sender's, of any length
    log.info("refused a bearer token: %s", why)
    REFUSAL.set(why)


def refusal() -> str | None:
    """Why this request's token was refused, if a verifier said."""
    return REFUSAL.get()


def forget() -> None:
    REFUSAL.set(None)
