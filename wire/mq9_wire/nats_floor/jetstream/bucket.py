"""A JetStream key-value bucket, read and written by hand over the stream ``KV_<bucket>``, as
nats-py's ``KeyValue`` does, but on whatever JetStream requests its owner makes (``Api``: the
cluster store's, with their one deadline and their errors), and with every read from the
stream's leader (current: a key another broker wrote a moment ago is there).

A key holds one value; a delete or purge leaves a marker (``KV-Operation``), which every read
here takes for "no value" (``live``): the one place deleted keys are told apart. A write may
expect a revision (the key's last sequence; 0: none yet), which is how two brokers writing
one key at once are told apart: the servers take one, refuse the other (``wrong last
sequence``, read by ``api.wrong_last_sequence``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Protocol, TypeGuard

from .api import (
    KV_DELETE,
    KV_OPERATION,
    KV_PURGE,
    NANOSECONDS,
    ROLLUP,
    ROLLUP_SUBJECT,
    Batch,
    ErrorCode,
    StoredEntry,
    deleted,
    err_code,
    expecting,
    kv_stream,
    kv_subject,
    wrong_last_sequence,
)

_CREATE_TRIES = 8  # a key's place taken and deleted by others in a row before giving up


class Api(Protocol):
    """The JetStream requests a bucket is reached by (the cluster store's ``Requests``)."""

    async def leader_get(
        self, stream: str, *, seq: int | None = None, last_by_subject: str | None = None
    ) -> StoredEntry | None: ...

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> int: ...

    async def direct_batch(self, stream: str, request: Mapping[str, Any]) -> Batch: ...


class Maker(Api, Protocol):
    """What makes a bucket too (the floor's ``Requests``)."""

    async def api(
        self, subject: str, request: Mapping[str, Any] | None, *, again: float | None = None
    ) -> dict[str, Any]: ...

    async def stream_info(
        self, stream: str, *, again: float | None = None
    ) -> dict[str, Any] | None: ...


def kv_config(bucket: str, *, replicas: int, description: str) -> dict[str, Any]:
    """The stream config of a bucket of one value a key in files, as nats-py's
    ``create_key_value`` writes it (identities' buckets made by earlier versions with it are
    this config: made again, the servers answer it as made)."""
    return {
        "name": kv_stream(bucket),
        "description": description,
        "subjects": [kv_subject(bucket, ">")],
        "max_consumers": -1,
        "max_msgs": -1,
        "discard": "new",
        "discard_new_per_subject": False,
        "max_msgs_per_subject": 1,
        "storage": "file",
        "num_replicas": replicas,
        "no_ack": False,
        "duplicate_window": 120 * NANOSECONDS,
        "sealed": False,
        "deny_delete": True,
        "deny_purge": False,
        "allow_rollup_hdrs": True,
        "allow_msg_ttl": True,
        "max_age": 0,
    }


async def open_bucket(api: Maker, name: str, *, replicas: int, description: str) -> Bucket:
    """The bucket ``name``, made (``kv_config``) where it is not; ``ValueError`` for a stream
    of its name that is no bucket."""
    bucket = Bucket(api, name)
    info = await api.stream_info(bucket.stream)
    if info is None:
        try:
            await api.api(
                f"STREAM.CREATE.{bucket.stream}",
                kv_config(name, replicas=replicas, description=description),
            )
        except Exception as exc:  # (made by another meanwhile: there, as wanted)
            if err_code(exc) != ErrorCode.STREAM_NAME_IN_USE:
                raise
    elif int(info["config"].get("max_msgs_per_subject") or 0) < 1:
        raise ValueError(f"the stream {bucket.stream} is not a key-value bucket")
    return bucket


async def won(write: Awaitable[int]) -> bool:
    """Whether ``write`` (one expecting a revision) was stored: False when another write
    came first; any other failure raised."""
    try:
        await write
    except Exception as exc:
        if not wrong_last_sequence(exc):
            raise
        return False
    return True


def purge_marker() -> dict[str, str]:
    """The headers of a purge: the key's marker, its earlier entries gone (a rollup)."""
    return {KV_OPERATION: KV_PURGE, ROLLUP: ROLLUP_SUBJECT}


def live(entry: StoredEntry | None) -> TypeGuard[StoredEntry]:
    """Whether a bucket's ``entry`` holds a value (there, and not a delete or purge)."""
    return entry is not None and not deleted(entry.headers)


class Bucket:
    """The key-value bucket ``name`` on ``api``."""

    def __init__(self, api: Api, name: str) -> None:
        self.api, self.name = api, name
        self.stream = kv_stream(name)

    def subject(self, key: str) -> str:
        return kv_subject(self.name, key)

    def key_of(self, subject: str) -> str:
        """The key an entry's ``subject`` names."""
        return subject[len(self.subject("")) :]

    async def last(self, key: str) -> StoredEntry | None:
        """``key``'s last entry from the leader, a delete or purge marker too; None: never
        written (or its marker gone with its TTL)."""
        return await self.api.leader_get(self.stream, last_by_subject=self.subject(key))

    async def get(self, key: str) -> StoredEntry | None:
        """``key``'s entry from the leader; None when it holds no value."""
        entry = await self.last(key)
        return entry if live(entry) else None

    async def revision(self, key: str) -> int:
        """``key``'s last sequence (a marker's too); 0 when none: what a write expects."""
        entry = await self.last(key)
        return 0 if entry is None else entry.seq

    async def put(self, key: str, value: bytes, headers: dict[str, str] | None = None) -> int:
        """``value`` for ``key`` whatever it held (the last write wins); its revision."""
        return await self.api.publish(self.subject(key), value, headers or None)

    async def update(
        self, key: str, value: bytes, revision: int, headers: dict[str, str] | None = None
    ) -> int:
        """``value`` for ``key`` if its last revision is ``revision`` (0: never written);
        else the api's error (``wrong_last_sequence``)."""
        return await self.api.publish(self.subject(key), value, expecting(revision, headers))

    async def create(self, key: str, value: bytes, headers: dict[str, str] | None = None) -> int:
        """``value`` for ``key`` if it holds none (never written, or deleted: its marker's
        place taken); else the api's error (``wrong_last_sequence``): the key's value is
        another's."""
        revision = 0
        for _ in range(_CREATE_TRIES):
            try:
                return await self.update(key, value, revision, headers)
            except Exception as exc:
                if not wrong_last_sequence(exc):
                    raise
                entry = await self.last(key)
                if live(entry):
                    raise
                revision = 0 if entry is None else entry.seq
        return await self.update(key, value, revision, headers)

    async def delete(self, key: str, revision: int | None = None) -> int:
        """A delete marker on ``key`` (expecting ``revision`` when given)."""
        headers = {KV_OPERATION: KV_DELETE}
        if revision is not None:
            headers = expecting(revision, headers)
        return await self.api.publish(self.subject(key), b"", headers)

    async def purge(self, key: str, revision: int | None = None) -> int:
        """A purge marker on ``key``, its earlier entries gone (expecting ``revision`` when
        given)."""
        headers = purge_marker()
        if revision is not None:
            headers = expecting(revision, headers)
        return await self.api.publish(self.subject(key), b"", headers)

    async def batch(self, request: Mapping[str, Any]) -> Batch:
        """A batched direct get of the bucket's stream (markers included)."""
        return await self.api.direct_batch(self.stream, request)

    async def last_values(self, keys: str) -> list[StoredEntry]:
        """The last entry holding a value of each key matching ``keys`` (a filter, ``*`` and
        ``>`` allowed), from any replica."""
        found = await self.batch({"multi_last": [self.subject(keys)], "batch": 1 << 20})
        return [entry for entry in found.entries if live(entry)]

    async def values(self, keys: str, *, most: int, page: int) -> tuple[list[StoredEntry], bool]:
        """The entries holding a (non-empty) value among those of keys matching ``keys``,
        oldest first, ``most`` at most, read ``page`` at a time; and whether that was all."""
        found: list[StoredEntry] = []
        seq = 1
        while len(found) < most:
            read = await self.batch({"seq": seq, "next_by_subj": self.subject(keys), "batch": page})
            found += [entry for entry in read.entries if live(entry) and entry.data]
            if not read.entries or not read.pending:
                return found, True
            seq = read.entries[-1].seq + 1
        return found, False
