"""What a cluster store makes when it opens: the message stream, the buckets and the durable
consumer of delayed messages, each created when it does not exist yet (an existing one is
kept as it is, but for the subjects and settings a later layout added, written once by any
broker). Their configs are the layout's on the wire: existing clusters keep working."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...._nats.jetstream.api import NANOSECONDS, ErrorCode, kv_stream, kv_subject
from .mapping import ARRIVALS_PREFIX, RETENTION_SECONDS, Layout
from .requests import JetStreamError
from .staged import consumer_name

if TYPE_CHECKING:
    from .requests import Requests


def message_config(layout: Layout) -> dict[str, Any]:
    """The message stream's settings."""
    return {
        "subjects": layout.message_subjects,
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
            "src": f"{layout.prefix}.m.*.*.*.*",
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
    """Makes ``layout``'s stream, buckets and consumer with ``replicas`` replicas."""

    def __init__(
        self, requests: Requests, layout: Layout, *, replicas: int, try_again: float
    ) -> None:
        self.requests, self.layout = requests, layout
        self.replicas, self.try_again = replicas, try_again

    async def make(self) -> None:
        layout = self.layout
        await self._ensure(layout.messages, message_config(layout))
        for bucket in layout.buckets:
            await self._ensure(kv_stream(bucket), bucket_config(bucket))
        await self._ensure_consumer()

    async def _ensure_consumer(self) -> None:
        """The durable consumer every broker of the layout takes delayed messages from."""
        layout = self.layout
        name = consumer_name(layout)
        config = {
            "durable_name": name,
            "filter_subject": layout.staged_filter,
            "ack_policy": "explicit",
            "ack_wait": 30 * NANOSECONDS,
            "deliver_policy": "all",
            "max_ack_pending": 1000,
        }
        await self.requests.api(
            f"CONSUMER.CREATE.{layout.messages}.{name}",
            {"stream_name": layout.messages, "config": config},
            again=self.try_again,  # the same config again: JetStream answers it as it was
        )

    async def _ensure(self, stream: str, config: dict[str, Any]) -> None:
        try:
            info = await self.requests.api(f"STREAM.INFO.{stream}", None, again=self.try_again)
        except JetStreamError as exc:
            if exc.code != 404:
                raise
        else:
            await self._catch_up(info["config"], config)
            return
        full = {
            "name": stream,
            "storage": "file",
            "retention": "limits",
            "num_replicas": self.replicas,
            **config,
        }
        try:
            # the same config twice: the second is answered as the first, or "name in use"
            await self.requests.api(f"STREAM.CREATE.{stream}", full, again=self.try_again)
        except JetStreamError as exc:
            if exc.err_code != ErrorCode.STREAM_NAME_IN_USE:  # another broker made it meanwhile
                raise

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
