"""What a cluster store makes when it opens: the message streams, the buckets and the durable
consumers of delayed messages, each created when it does not exist yet (an existing one is
kept as it is, but for the subjects and settings a later layout added, written once by any
broker). Their configs are the layout's on the wire: existing clusters keep working.

How many message streams a layout has is the layout's own, recorded in its first
stream's metadata (``mq9_streams``) when that stream is made; a stream made before the count
was recorded is a layout of one. A store given no count adopts the recorded one; one given
another count is refused (``StreamCount``): its mailboxes would be looked for in streams
that do not hold them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mq9_wire.nats_floor.jetstream.api import NANOSECONDS, ErrorCode, kv_stream, kv_subject

from ..mailbox_store import StorageError
from .key_counts import counts_config, counts_stream
from .leaders import spread_leaders
from .mapping import ARRIVALS_PREFIX, RETENTION_SECONDS, STREAMS_KEY, Layout
from .requests import StorageJetStreamError
from .staged import consumer_name

if TYPE_CHECKING:
    from .requests import StorageRequests


class StreamCount(StorageError):
    """A store given a stream count other than the one its layout recorded."""

    def __init__(self, layout: Layout, recorded: int, given: int) -> None:
        super().__init__(
            f"the layout {layout.name} keeps its messages in {recorded} stream"
            f"{'' if recorded == 1 else 's'} (recorded in {layout.messages}), and this broker "
            f"was given --streams {given}: start it with --streams {recorded}, or without "
            "--streams to adopt the recorded count"
        )
        self.recorded, self.given = recorded, given


def message_config(layout: Layout, index: int = 0) -> dict[str, Any]:
    """Message stream ``index``'s settings."""
    return {
        "subjects": layout.subjects_of(index),
        "max_age": RETENTION_SECONDS * NANOSECONDS,
        "allow_direct": True,
        "allow_msg_ttl": True,
        "allow_msg_schedules": True,
        "allow_rollup_hdrs": True,
        "allow_atomic": True,
        "duplicate_window": 120 * NANOSECONDS,
        # every message stored, a delayed one the server wrote too, announced on
        # $mq9.WAKE.<its mailbox's digest>, empty, as a broker announces (the waker,
        # the gateway): whichever broker wrote it, or none
        "republish": {
            "src": f"{layout.stream_prefix(index)}.m.*.*.*.*",
            "dest": ARRIVALS_PREFIX + "{{wildcard(1)}}",
            "headers_only": True,
        },
    }


def bucket_config(bucket: str) -> dict[str, Any]:
    """A bucket's stream settings (a key-value bucket of one value a key)."""
    return {
        "subjects": [kv_subject(bucket, ">")],
        "max_msgs_per_subject": 1,
        "discard": "new",
        "allow_direct": True,
        "allow_rollup_hdrs": True,
        "deny_delete": True,
        "allow_msg_ttl": True,
        "allow_atomic": True,
    }


class Opening:
    """Makes the streams, buckets and consumers of the layout named ``name`` with
    ``replicas`` replicas; ``streams``: its count of message streams (None: the recorded
    one, or 1 for a new layout)."""

    def __init__(
        self,
        requests: StorageRequests,
        name: str,
        *,
        replicas: int,
        try_again: float,
        streams: int | None = None,
    ) -> None:
        self.requests, self.name, self.streams = requests, name, streams
        self.replicas, self.try_again = replicas, try_again
        Layout(name, streams or 1)  # (a count out of range: ValueError before any request)

    async def make(self) -> Layout:
        """The layout, made where it was not (its count of streams the recorded one)."""
        wanted = self.streams or 1
        first = Layout(self.name, wanted)
        made = await self._ensure(first.messages, message_config(first), {STREAMS_KEY: str(wanted)})
        recorded = int((made.get("metadata") or {}).get(STREAMS_KEY, 1))
        layout = Layout(self.name, recorded)
        if self.streams is not None and self.streams != recorded:
            raise StreamCount(layout, recorded, self.streams)
        for index in range(1, layout.streams):
            await self._ensure(layout.stream_name(index), message_config(layout, index))
        for bucket in layout.buckets:
            await self._ensure(kv_stream(bucket), bucket_config(bucket))
        # the keys each party holds, counted by the servers (key_counts.py)
        await self._ensure(counts_stream(layout), counts_config(layout))
        for index in range(layout.streams):
            await self._ensure_consumer(layout, index)
        if layout.streams > 1:
            await spread_leaders(self.requests, layout.message_streams, again=self.try_again)
        return layout

    async def _ensure_consumer(self, layout: Layout, index: int) -> None:
        """The durable consumer every broker of the layout takes the delayed messages of
        message stream ``index`` from."""
        name = consumer_name(layout, index)
        stream = layout.stream_name(index)
        config = {
            "durable_name": name,
            "filter_subject": layout.staged_filter_of(index),
            "ack_policy": "explicit",
            "ack_wait": 30 * NANOSECONDS,
            "deliver_policy": "all",
            "max_ack_pending": 1000,
        }
        await self.requests.api(
            f"CONSUMER.CREATE.{stream}.{name}",
            {"stream_name": stream, "config": config},
            again=self.try_again,  # the same config again: JetStream answers it as it was
        )

    async def _ensure(
        self, stream: str, config: dict[str, Any], metadata: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """``stream`` made with ``config`` (and ``metadata``) unless it exists; its config,
        as the servers keep it."""
        try:
            info = await self.requests.api(f"STREAM.INFO.{stream}", None, again=self.try_again)
        except StorageJetStreamError as exc:
            if exc.code != 404:
                raise
        else:
            await self._catch_up(info["config"], config)
            return dict(info["config"])
        full = {
            "name": stream,
            "storage": "file",
            "retention": "limits",
            "num_replicas": self.replicas,
            **config,
        }
        if metadata:
            full["metadata"] = metadata
        try:
            # the same config twice: the second is answered as the first, or "name in use"
            made = await self.requests.api(f"STREAM.CREATE.{stream}", full, again=self.try_again)
        except StorageJetStreamError as exc:
            if exc.err_code != ErrorCode.STREAM_NAME_IN_USE:  # another broker made it meanwhile
                raise
            made = await self.requests.api(f"STREAM.INFO.{stream}", None, again=self.try_again)
        return dict(made["config"])

    async def _catch_up(self, existing: dict[str, Any], config: dict[str, Any]) -> None:
        """A stream made before a subject or setting of the layout was (the tag index's
        ``t.>``, the heads' ``h.>``, atomic batches into a bucket) takes it: every broker
        writes it once one does."""
        missing = [subject for subject in config["subjects"] if subject not in existing["subjects"]]
        atomic = config.get("allow_atomic") and not existing.get("allow_atomic")
        if missing or atomic:
            wanted = {**existing, "subjects": [*existing["subjects"], *missing]}
            if atomic:
                wanted["allow_atomic"] = True
            await self.requests.api(f"STREAM.UPDATE.{existing['name']}", wanted)
