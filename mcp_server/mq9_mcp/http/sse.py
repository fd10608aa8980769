"""SSE priming (MCP 2025-11-25, SEP-1699): each event stream a request opens starts with an
event that has an id and empty data, and says in its ``retry`` field how long a client waits
before it reconnects. The MCP SDK sends these once it has an ``EventStore``; this one keeps no
history. Events are not replayed: an event store shared by every session cannot tell whose
stream a ``Last-Event-ID`` names when two sessions use the same request id, and replaying
another client's events is worse than replaying none. A stream resumed with ``Last-Event-ID``
therefore carries nothing already sent; a call whose answer was lost with its connection is
called again (a fetch hands the same unacked messages out again)."""

from __future__ import annotations

import secrets

from mcp.server.streamable_http import EventCallback, EventId, EventStore, StreamId
from mcp.types import JSONRPCMessage

# How long a client waits before reconnecting a dropped stream (the priming event's retry).
RETRY_MS = 1000


class PrimingEvents(EventStore):
    """Event ids for the SDK's priming events and messages, unguessable, remembering nothing."""

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        return secrets.token_urlsafe(12)

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        return None
