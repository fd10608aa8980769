"""What the server said of itself in its INFO: nats-py keeps the last one in a private
attribute (``_server_info``) and offers no public reader, so this is the one place that reads it."""

from __future__ import annotations

from typing import Any


def server_info(nc: Any) -> dict[str, Any]:
    """A copy of the INFO the connection ``nc`` holds (``{}`` before the first, or on a nats-py
    that keeps it elsewhere: callers treat every field as possibly missing)."""
    info = getattr(nc, "_server_info", None)
    return dict(info) if isinstance(info, dict) else {}
