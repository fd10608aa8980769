"""The leader lock: which of several brokers on one JetStream-kept state serves.

The key ``leader`` of a JetStream key-value bucket (``{stream}_LEADER``, replicated like the
stream) whose entries expire ``ttl`` seconds after they were written. The holder rewrites it
every ``refresh_every`` seconds, each rewrite stating the revision it last wrote; a standby
tries to create it every ``POLL_EVERY`` seconds, and JetStream lets exactly one create succeed
once it expired or was deleted. The holder's lease ends ``margin`` seconds before the key can
expire, counted from the send time of its last acknowledged rewrite. A new holder writes a
fence (an empty record after the stream's last one) before it reads the stream, so a late
write of the old holder is refused. docs/broker.md ("Standby brokers") tells why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from ..._nats.info import server_info
from ..cluster.survey import replicas_for
from ..storage import StorageError
from ..storage.jetstream import SUBJECT_PREFIX
from ..storage.loop_thread import LoopThread, Patience

log = logging.getLogger("langchain_mq9.broker")


LOCK_TTL = 3.0  # seconds a lock entry lives unless rewritten
REFRESH_EVERY = 1.0
MARGIN = 1.0  # the lease ends this long before the entry can expire (clock skew, scheduling)
POLL_EVERY = 0.25  # how often a standby tries to take the lock
LOCK_KEY = "leader"
_ATTEMPT_TIMEOUT = 1.0
_CONNECT_TIMEOUT = 10.0
_PATIENCE = Patience(ask=_ATTEMPT_TIMEOUT, wait=_CONNECT_TIMEOUT, pause=POLL_EVERY)
# The fence: a record of no changes, in the store's record format (version 1)
FENCE_RECORD = b'{"v": 1, "ops": []}\n'
FENCE_TIMEOUT = 30.0  # longer than a stream leader election

T = TypeVar("T")


def lock_bucket(stream: str) -> str:
    """The key-value bucket holding the leader lock of ``stream``."""
    return f"{stream}_LEADER"


def holder_name() -> str:
    """Who holds the lock: this machine and process, made unique by a random tail (a
    process that lost the lock and takes it again is a new holder)."""
    return f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:8]}"


class LeaderLock:
    """The leader lock of ``stream`` on the NATS servers ``servers``; its own connection,
    event loop and thread, so that it is kept however busy the serving loop is.

    ``replicas``: the bucket's when this lock creates it (None: 3 when the cluster has 3 or
    more servers, else 1). ``clock``: monotonic seconds.
    """

    def __init__(
        self,
        servers: list[str],
        stream: str,
        *,
        replicas: int | None = None,
        ttl: float = LOCK_TTL,
        refresh_every: float = REFRESH_EVERY,
        margin: float = MARGIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < margin < ttl or not 0 < refresh_every < ttl - margin:
            raise ValueError("need 0 < margin < ttl and 0 < refresh_every < ttl - margin")
        self.servers, self.stream, self.bucket = servers, stream, lock_bucket(stream)
        self.ttl, self.refresh_every, self.margin = ttl, refresh_every, margin
        self.clock = clock
        self.holder = holder_name()
        self._revision: int | None = None  # of our entry, while we hold the lock
        self._lease_end = 0.0  # clock() before which we may serve
        self._keeping: Future[None] | None = None
        self._own = LoopThread("mq9-leader-lock")
        self._loop = self._own.loop
        try:
            self._own.run(self._open(replicas), _CONNECT_TIMEOUT * 2)
        except BaseException:
            self.close()
            raise

    async def _open(self, replicas: int | None) -> None:
        from nats.js.api import KeyValueConfig, StorageType
        from nats.js.errors import BucketNotFoundError

        self._nc, self._js, kv = await self._own.open(
            self.servers, lambda js: js.key_value(self.bucket), BucketNotFoundError, _PATIENCE
        )
        if kv is not None:
            self._kv = kv
            return
        if replicas is None:  # the servers the cluster tells of, each counted once
            replicas = replicas_for(server_info(self._nc))
        config = KeyValueConfig(
            bucket=self.bucket,
            ttl=self.ttl,
            replicas=replicas,
            storage=StorageType.FILE,
            description=f"which broker serves the mq9 state in stream {self.stream}",
        )
        try:
            self._kv = await self._js.create_key_value(config)
        except Exception as exc:
            raise StorageError(f"cannot create the lock bucket {self.bucket}: {exc}") from None

    # -- taking the lock -----------------------------------------------------------------------

    def try_take(self) -> bool:
        """Take the lock if no one holds it; True when this process now holds it."""
        return self._own.run(self._try_take(), self.ttl)

    async def _try_take(self) -> bool:
        from nats.js.errors import KeyWrongLastSequenceError

        sent = self.clock()
        try:
            revision = await self._kv.create(LOCK_KEY, self.holder.encode())
        except KeyWrongLastSequenceError:  # someone holds it
            return False
        except Exception as exc:  # no KV leader yet, reconnecting: the next poll tries again
            log.debug("could not try the leader lock: %s: %s", type(exc).__name__, exc)
            return False
        self._revision = revision
        self._lease_end = sent + self.ttl - self.margin
        return True

    def wait_to_take(self, stop: threading.Event) -> bool:
        """Block until this process holds the lock (True) or ``stop`` is set (False)."""
        if self.holds():
            return True
        while not stop.is_set():
            if self.try_take():
                return True
            stop.wait(POLL_EVERY)
        return False

    def holds(self) -> bool:
        """Whether this process may serve now (read from any thread)."""
        return self._revision is not None and self.clock() < self._lease_end

    def current_holder(self) -> str | None:
        """Who holds the lock as JetStream says now (None: no one, or no answer)."""
        return self._own.run(self._current_holder(), self.ttl)

    async def _current_holder(self) -> str | None:
        try:
            entry = await self._kv.get(LOCK_KEY)
        except Exception:
            return None
        return entry.value.decode(errors="replace") if entry.value else None

    # -- keeping it ----------------------------------------------------------------------------

    def keep(self, on_lost: Callable[[], object]) -> None:
        """Rewrite the entry every ``refresh_every`` s; ``on_lost()`` (on the lock's thread)
        once the lease ended without a rewrite acknowledged."""
        self._keeping = asyncio.run_coroutine_threadsafe(self._keep(on_lost), self._loop)

    async def _keep(self, on_lost: Callable[[], object]) -> None:
        from nats.js.errors import KeyWrongLastSequenceError

        next_rewrite = self.clock() + self.refresh_every
        while True:
            left = self._lease_end - self.clock()
            if left <= 0:
                break
            await asyncio.sleep(max(0.0, min(next_rewrite - self.clock(), left)))
            if self.clock() < next_rewrite:
                continue  # woke for the lease's end: checked above
            sent = self.clock()
            try:
                revision = await asyncio.wait_for(
                    self._kv.update(LOCK_KEY, self.holder.encode(), last=self._revision),
                    max(0.01, min(_ATTEMPT_TIMEOUT, self._lease_end - sent)),
                )
            except KeyWrongLastSequenceError:
                if not await self._adopt():
                    log.error("the leader lock is held by another broker")
                    break
                continue
            except Exception as exc:  # no KV leader, reconnecting, slow: tried again at once
                log.warning("could not renew the leader lock: %s: %s", type(exc).__name__, exc)
                next_rewrite = self.clock() + min(0.2, self.refresh_every)
                continue
            self._revision = revision
            self._lease_end = sent + self.ttl - self.margin
            next_rewrite = sent + self.refresh_every
        self._revision = None
        self._lease_end = 0.0
        on_lost()

    async def _adopt(self) -> bool:
        """After a refused rewrite: True when the entry is still ours (a rewrite we gave up on
        was stored after all); its revision is then taken, the lease not lengthened."""
        try:
            entry = await asyncio.wait_for(self._kv.get(LOCK_KEY), _ATTEMPT_TIMEOUT)
        except Exception:
            return True  # not known: the lease's end decides
        if entry.value == self.holder.encode():
            self._revision = entry.revision
            return True
        return False

    def release(self) -> None:
        """Stop keeping the lock and delete our entry, so a standby takes over at once."""
        keeping, self._keeping = self._keeping, None
        if keeping is not None:
            self._loop.call_soon_threadsafe(keeping.cancel)
        revision, self._revision = self._revision, None
        self._lease_end = 0.0
        if revision is not None:
            with contextlib.suppress(Exception):
                self._own.run(self._kv.delete(LOCK_KEY, last=revision), self.ttl)

    def close(self) -> None:
        self._own.close()

    # -- the fence -----------------------------------------------------------------------------

    def fence(self) -> int:
        """Write the fence after the stream's last record (see the module); its sequence,
        or 0 when the stream does not exist yet (nothing to fence)."""
        return self._own.run(self._fence(), FENCE_TIMEOUT + _ATTEMPT_TIMEOUT)

    async def _fence(self) -> int:
        from nats.js.errors import APIError, NotFoundError

        subject = f"{SUBJECT_PREFIX}.{self.stream.lower()}"
        deadline = self._loop.time() + FENCE_TIMEOUT
        while True:
            failure: Exception
            try:
                info = await self._js.stream_info(self.stream)
                headers = {"Nats-Expected-Last-Sequence": str(info.state.last_seq)}
                ack = await self._js.publish(subject, FENCE_RECORD, headers=headers)
                return ack.seq
            except NotFoundError:
                return 0
            except APIError as exc:  # 400: a late write landed meanwhile; 503: no leader yet
                failure = exc
            except Exception as exc:
                failure = exc
            if self._loop.time() >= deadline:
                raise StorageError(
                    f"could not fence stream {self.stream} in {FENCE_TIMEOUT:g} s: "
                    f"{type(failure).__name__}: {failure}"
                )
            await asyncio.sleep(0.1)
