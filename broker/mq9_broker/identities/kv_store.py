"""The identities of an enforcing broker kept on its NATS cluster (``--store jetstream
--credentials DIR``): ``KvIdentityStore``, the credential store of store.py in a JetStream
key-value bucket ``<stream>_IDENTITIES``, replicated like the state, so that every broker
serving the state enforces the same ownership and revocations (each follows the records with
watches, and reads one another broker made a moment ago on a miss: ``owner``, ``grantees``). It
asks NATS from a loop of its own (storage/loop_thread.py).

A KV key allows only ``[-/_=.a-zA-Z0-9]``: a mailbox or agent name is keyed by its SHA-256 and
kept in the value (``cred.<id>``, ``seen.<id>``, ``mailbox.<sha256>``, ``agent.<sha256>``,
``grant.<sha256 of the mailbox>.<principal>``). An ownership record is created, never
overwritten (KV ``create``), and acknowledged by a quorum before the answer that made it goes
out. Revocations reach a broker by a watch on ``cred.>``. docs/security-broker.md ("On a
NATS cluster") tells why. The bucket is made, and read and written, by the NATS floor's one
JetStream client (``nats_floor/jetstream/requests.py`` and ``bucket.py``: the cluster store's
too, every read from the leader); its watches, and its reading of every key, are the floor's
``nats_floor/jetstream/consumers.py`` (nats-py's consumers behind it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from mq9_wire.nats_floor.info import server_info
from mq9_wire.nats_floor.jetstream.api import deleted, wrong_last_sequence
from mq9_wire.nats_floor.jetstream.bucket import open_bucket, won
from mq9_wire.nats_floor.jetstream.consumers import Watch, read_ordered, watch
from mq9_wire.nats_floor.jetstream.ready import Deadline, until_ready
from mq9_wire.nats_floor.jetstream.requests import NoAnswer, Requests
from mq9_wire.nats_floor.redaction import describe

from ..nats_servers.survey import replicas_for
from ..storage.loop_thread import LoopThread
from .store import (
    ROTATION_PAUSE,
    BaseIdentityStore,
    Credential,
    CredentialError,
    OwnedByAnother,
    ShareFull,
    _hash,
    check_id,
    new_secret,
)

if TYPE_CHECKING:
    from mq9_wire.nats_floor.jetstream.bucket import Bucket

log = logging.getLogger("mq9_broker.identities.ownership")

T = TypeVar("T")

BUCKET_SUFFIX = "_IDENTITIES"
OPEN_TIMEOUT = 20.0  # a cluster just started elects its JetStream leader first
ASK_TIMEOUT = 10.0  # one read or write: longer than a stream leader election (docs/broker.md)
_POLL = 0.25
_RECORD_TRIES = 8  # a record created and removed by others in a row before giving up


def identities_bucket(stream: str) -> str:
    """The key-value bucket holding the identities of the broker on ``stream``."""
    return stream + BUCKET_SUFFIX


def _keyed(kind: str, name: str) -> str:
    return f"{kind}.{hashlib.sha256(name.encode()).hexdigest()}"


class KvIdentityStore(BaseIdentityStore):
    """The identities in the bucket of ``stream`` on the NATS servers ``servers`` (URLs that
    log in as the broker's user). ``replicas``: the bucket's when this store creates it
    (None: 3 when the cluster has 3 or more servers, else 1). ``watch``: follow revocations
    (a broker); the ``credentials`` command only reads and writes."""

    def __init__(
        self,
        servers: list[str],
        *,
        stream: str,
        replicas: int | None = None,
        watch: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock)
        self.bucket = identities_bucket(stream)
        self.where = f"JetStream bucket {self.bucket}"
        self._own = LoopThread("mq9-identities")
        self._nc: Any = None
        self._following: asyncio.Future[None] | None = None
        self._watcher: Watch | None = None
        self._owner_watches: list[Watch] = []
        self._owner_follows: list[asyncio.Future[None]] = []
        try:
            self._ask(self._open(servers, replicas), OPEN_TIMEOUT * 2)
            if watch:
                self._ask(self._follow_credentials(), OPEN_TIMEOUT)
        except BaseException:
            self.close()
            raise

    # -- asking the bucket, from any thread or loop --------------------------------------------

    def _ask(self, work: Coroutine[Any, Any, T], timeout: float = ASK_TIMEOUT) -> T:
        """``work``'s result (run on the store's loop), waited for from another thread."""
        return self._own.run(self._plainly(work), timeout, error=CredentialError, who=self.where)

    async def _ask_async(self, work: Coroutine[Any, Any, T]) -> T:
        """``work``'s result, awaited from another event loop (the serving one)."""
        future = asyncio.run_coroutine_threadsafe(self._plainly(work), self._own.loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), ASK_TIMEOUT)
        except TimeoutError:
            raise CredentialError(f"{self.where} did not answer within {ASK_TIMEOUT:g} s") from None

    async def _plainly(self, work: Coroutine[Any, Any, T]) -> T:
        """``work``, failing with ``CredentialError`` only (its text has no URL's secret)."""
        try:
            return await work
        except CredentialError:
            raise
        except Exception as exc:
            raise CredentialError(f"{self.where}: {describe(exc)}") from None

    async def _open(self, servers: list[str], replicas: int | None) -> None:
        import nats

        try:
            self._nc = await nats.connect(
                servers, connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=0.25
            )
        except Exception as exc:
            raise CredentialError(
                f"cannot connect to NATS as the broker's user: {describe(exc)} (are the servers "
                "configured with the block 'mq9-dev-broker credentials setup DIR' printed, "
                "from this DIR?)"
            ) from None
        if replicas is None:  # the servers the cluster tells of, each counted once
            replicas = replicas_for(server_info(self._nc))
        self._keys = await self._find_bucket(Requests(self._nc, timeout=ASK_TIMEOUT), replicas)

    async def _find_bucket(self, requests: Requests, replicas: int) -> Bucket:
        """The bucket, made where it is not, asked again while JetStream does not answer (a
        cluster just started elects its leader first) for ``OPEN_TIMEOUT``; none at all (no
        responders) is said at once."""
        deadline = Deadline(OPEN_TIMEOUT, asyncio.get_running_loop().time)
        what = "mq9 credentials (hashes) and who owns what"

        def not_yet(exc: Exception) -> None:
            if (isinstance(exc, NoAnswer) and exc.no_responders) or deadline.passed():
                raise CredentialError(
                    f"JetStream is not available for the broker's user: {describe(exc)} (the "
                    "servers' config from 'mq9-dev-broker credentials setup' enables it; the "
                    "servers need a jetstream block too)"
                ) from None

        find = partial(open_bucket, requests, self.bucket, replicas=replicas, description=what)
        return await until_ready(find, not_yet, pause=_POLL)

    async def _follow_credentials(self) -> None:
        """Read what the bucket holds of ``cred.>``, then follow it with a watch (which
        begins with the current value of each key again: a change made in between is not
        missed). Returns once the first reading is known."""
        self._learn_credentials(await self._read_all("cred"))
        self._watcher = await watch(self._nc, self.bucket, "cred.>", timeout=ASK_TIMEOUT)
        self._following = asyncio.ensure_future(self._follow(self._watcher))

    async def _stop_following(self) -> None:
        for follow in self._owner_follows:
            follow.cancel()
        for watcher in self._owner_watches:
            with contextlib.suppress(Exception):
                await watcher.stop()
        if self._following is not None:
            self._following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._following
            with contextlib.suppress(Exception):  # its subscription's tasks end with it
                if self._watcher is not None:
                    await self._watcher.stop()

    async def _follow(self, watcher: Watch) -> None:
        async for change in watcher.changes():
            self._learn_credentials({change.key: change.value})

    def _learn_credentials(self, values: dict[str, bytes]) -> None:
        found = (_credential(key, value) for key, value in values.items())
        self._learn(
            {
                cid: (record["sha256"], record["revoked"] is not None)
                for cid, record in filter(None, found)
            }
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a store that failed to open has less to stop
            self._own.run(self._stop_following(), 5)
        self._own.close(self._nc)

    # -- what the broker reads ---------------------------------------------------------------

    def _look(self) -> None:
        """Nothing to ask: the watch keeps the copy current."""

    def refresh(self) -> None:
        """Nothing to ask: the watch keeps the copy current."""

    def _current(self, credential_id: str) -> tuple[str, bool] | None:
        known = self._credentials.get(credential_id)
        if known is not None:
            return known
        try:  # issued a moment ago, maybe: the watch may not have brought it yet
            record = self._ask(self._get_credential(credential_id))
        except CredentialError as exc:
            log.warning("could not check credential %r: %s", credential_id, exc)
            return None
        return None if record is None else (record["sha256"], record["revoked"] is not None)

    async def _get_credential(self, credential_id: str) -> dict[str, Any] | None:
        key = f"cred.{credential_id}"
        entry = await self._keys.get(key)
        found = None if entry is None else _credential(key, entry.data)
        return None if found is None else found[1]

    def seen(self, credential_id: str) -> None:
        """Written without waiting (a login is answered at once); a failure is logged."""
        asyncio.run_coroutine_threadsafe(self._note_seen(credential_id), self._own.loop)

    async def _note_seen(self, credential_id: str) -> None:
        try:
            await self._keys.put(f"seen.{credential_id}", str(int(self.clock())).encode())
        except Exception as exc:
            log.debug("could not note %r's login: %s", credential_id, describe(exc))

    # -- what the operator does --------------------------------------------------------------

    def issue(self, credential_id: str, label: str = "") -> str:
        check_id(credential_id)
        secret = new_secret()
        sha256 = _hash(secret)
        record = {"sha256": sha256, "label": label, "created": int(self.clock()), "revoked": None}
        self._ask(self._issue(credential_id, record))
        self._learn({credential_id: (sha256, False)})
        return secret

    async def _issue(self, credential_id: str, record: dict[str, Any]) -> None:
        key, value = f"cred.{credential_id}", json.dumps(record).encode()
        entry = await self._keys.get(key)
        found = None if entry is None else _credential(key, entry.data)
        if found is not None and found[1]["revoked"] is None:
            raise CredentialError(
                f"credential {credential_id!r} exists and is not revoked: revoke it first "
                "to issue a new secret"
            )
        if entry is not None:
            await asyncio.sleep(ROTATION_PAUSE)
        if entry is None:
            written = await won(self._keys.create(key, value))
        else:
            written = await won(self._keys.update(key, value, entry.seq))
        if not written:
            raise CredentialError(f"credential {credential_id!r} changed meanwhile: try again")

    def revoke(self, credential_id: str) -> None:
        sha256 = self._ask(self._revoke(credential_id))
        self._learn({credential_id: (sha256, True)})

    async def _revoke(self, credential_id: str) -> str:
        key = f"cred.{credential_id}"
        while True:  # another change in between: read it again
            entry = await self._keys.get(key)
            found = None if entry is None else _credential(key, entry.data)
            if entry is None or found is None:
                raise CredentialError(f"no credential {credential_id!r} in {self.where}")
            record = found[1]
            if record["revoked"] is not None:
                return str(record["sha256"])  # revoked already: nothing more to do
            record["revoked"] = int(self.clock())
            if await won(self._keys.update(key, json.dumps(record).encode(), entry.seq)):
                return str(record["sha256"])

    def listing(self) -> list[Credential]:
        credentials = self._ask(self._read_all("cred"))
        seen = self._ask(self._read_all("seen"))
        rows = []
        for key, value in sorted(credentials.items()):
            found = _credential(key, value)
            if found is None:
                continue
            cid, record = found
            last = seen.get(f"seen.{cid}")
            rows.append(
                Credential(
                    cid,
                    str(record.get("label", "")),
                    int(record.get("created", 0)),
                    record["revoked"],
                    int(last) if last else None,
                )
            )
        return rows

    async def _read_all(self, kind: str) -> dict[str, bytes]:
        """Every key ``<kind>.…`` with its value, as the bucket holds them now: the last value
        of each key on an ordered consumer, read up to the one no other follows (the floor's
        ``read_ordered``: a broker taking over once read no owners at all with nats-py's KV
        watch's "nothing more")."""
        found: dict[str, bytes] = {}
        reads = read_ordered(
            self._nc,
            self._keys.stream,
            self._keys.subject(f"{kind}.>"),
            timeout=ASK_TIMEOUT,
            last_per_subject=True,
            inactive_threshold=60.0,
        )
        async for read in reads:
            key = self._keys.key_of(read.subject)
            if deleted(read.headers):
                found.pop(key, None)
            else:
                found[key] = read.data
        return found

    # -- ownership records ---------------------------------------------------------------------

    def owners(self) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
        mailboxes = {
            r["name"]: r["principal"]
            for r in _records(self._ask(self._read_all("mailbox")), "name")
        }
        agents = {
            r["name"]: r["principal"] for r in _records(self._ask(self._read_all("agent")), "name")
        }
        grants: dict[str, set[str]] = {}
        for r in _records(self._ask(self._read_all("grant")), "mailbox"):
            grants.setdefault(r["mailbox"], set()).add(r["principal"])
        return mailboxes, agents, grants

    async def own_mailbox(self, mailbox: str, principal: str) -> None:
        record = {"name": mailbox, "principal": principal}
        await self._ask_async(self._record(_keyed("mailbox", mailbox), record))

    async def own_agent(self, name: str, principal: str) -> None:
        record = {"name": name, "principal": principal}
        await self._ask_async(self._record(_keyed("agent", name), record))

    async def grant_send(self, mailbox: str, principal: str) -> None:
        record = {"mailbox": mailbox, "principal": principal}
        await self._ask_async(self._record(f"{_keyed('grant', mailbox)}.{principal}", record))

    async def owner(self, kind: str, name: str) -> str | None:
        entry = await self._ask_async(self._get(_keyed(kind, name)))
        found = _records({"": entry}, "name") if entry is not None else []
        return found[0]["principal"] if found and found[0]["name"] == name else None

    async def grantees(self, mailbox: str) -> set[str]:
        values = await self._ask_async(self._read_all(_keyed("grant", mailbox)))
        return {r["principal"] for r in _records(values, "mailbox") if r["mailbox"] == mailbox}

    async def _get(self, key: str) -> bytes | None:
        """``key``'s value from the bucket's leader (current: a record another broker made a
        moment ago is there, where a replica read may not have it yet); None when none."""
        entry = await self._keys.get(key)
        return None if entry is None else entry.data

    def follow_owners(self, learn: Callable[[str, dict[str, str]], None]) -> None:
        """(A watch per kind, from the records' current values on: one made between the
        broker's first reading and the watch's start is not missed.)"""
        self._ask(self._follow_owners(learn), OPEN_TIMEOUT)

    async def _follow_owners(self, learn: Callable[[str, dict[str, str]], None]) -> None:
        for kind, field in (("mailbox", "name"), ("agent", "name"), ("grant", "mailbox")):
            watcher = await watch(self._nc, self.bucket, f"{kind}.>", timeout=ASK_TIMEOUT)
            self._owner_watches.append(watcher)
            self._owner_follows.append(
                asyncio.ensure_future(self._follow_kind(watcher, kind, field, learn))
            )

    async def _follow_kind(
        self, watcher: Watch, kind: str, field: str, learn: Callable[[str, dict[str, str]], None]
    ) -> None:
        async for change in watcher.changes():
            if change.removed:
                # a claim undone (its CREATE refused): forgotten where learned
                learn(kind + ".gone", {"key": change.key.partition(".")[2]})
                continue
            for record in _records({change.key: change.value}, field):
                try:
                    learn(kind, record)
                except Exception as exc:  # a bug: the records still read on a miss
                    log.error("could not learn an ownership record: %r", exc)

    async def _record(self, key: str, record: dict[str, str]) -> None:
        """Create ``key``; one there already holding the same principal is the same record."""
        for _ in range(_RECORD_TRIES):
            try:
                await self._keys.create(key, json.dumps(record).encode())
                return
            except Exception as exc:
                if not wrong_last_sequence(exc):
                    raise
                value = await self._get(key)  # (the leader's: the racer's record is there)
            if value is None:
                continue  # removed meanwhile (a claim undone): created again
            if json.loads(value).get("principal") != record["principal"]:
                raise OwnedByAnother
            return
        raise CredentialError(f"{key}: made and removed by others {_RECORD_TRIES} times")

    async def disown_mailbox(self, mailbox: str, principal: str) -> None:
        await self._ask_async(self._disown(_keyed("mailbox", mailbox), principal))

    async def _disown(self, key: str, principal: str) -> None:
        """Delete ``key`` when it names ``principal``, expecting the revision read (one
        made again meanwhile stays)."""
        entry = await self._keys.get(key)  # (the leader's: a claim made a moment ago is there)
        if entry is None or json.loads(entry.data or b"{}").get("principal") != principal:
            return
        await won(self._keys.delete(key, entry.seq))

    # The registrations an agent holds: ``held.<sha256 of the name>`` names its holder,
    # and ``holds.<principal>`` counts them. The count is decided by the counter's write,
    # expecting the revision read (a broker racing another reads again): no number of brokers
    # taking the principal's REGISTERs at once passes ``most``, and nothing one broker keeps
    # in memory is asked. The counter is written first: a broker stopped between the two
    # writes leaves it one too high (the agent's own share one smaller), never too low

    async def hold_agent(self, name: str, principal: str, most: int) -> bool:
        return await self._ask_async(self._hold(_keyed("held", name), name, principal, most))

    async def _hold(self, key: str, name: str, principal: str, most: int) -> bool:
        record = json.dumps({"name": name, "principal": principal}).encode()
        for _ in range(_RECORD_TRIES):
            entry = await self._keys.get(key)
            if entry is not None:
                if json.loads(entry.data or b"{}").get("principal") != principal:
                    raise OwnedByAnother
                # held already: its version renewed, so an UNREGISTER that read the one
                # before gives back nothing; another write first: read again
                if await won(self._keys.update(key, record, entry.seq)):
                    return False
                continue
            if not await self._counted(principal, +1, most):
                continue  # another broker's write came first: read again
            try:
                await self._keys.create(key, record)
            except Exception as exc:
                await self._count_down(principal)  # (taken meanwhile: read again who holds it)
                if not wrong_last_sequence(exc):
                    raise
                continue
            return True
        raise CredentialError(f"{key}: held and released by others {_RECORD_TRIES} times")

    async def held_agent(self, name: str, principal: str) -> int | None:
        return await self._ask_async(self._held(_keyed("held", name), principal))

    async def _held(self, key: str, principal: str) -> int | None:
        entry = await self._keys.get(key)
        if entry is None or json.loads(entry.data or b"{}").get("principal") != principal:
            return None
        return entry.seq

    async def release_agent(self, name: str, principal: str, version: int | None = None) -> None:
        await self._ask_async(self._release(_keyed("held", name), principal, version))

    async def _release(self, key: str, principal: str, version: int | None) -> None:
        held = await self._held(key, principal) if version is None else version
        if held is None:
            return
        # (released once, by one broker: the delete expects the version read)
        if await won(self._keys.delete(key, held)):
            await self._count_down(principal)

    async def _count_down(self, principal: str) -> None:
        for _ in range(_RECORD_TRIES):
            if await self._counted(principal, -1, None):
                return
        raise CredentialError(f"holds.{principal}: written by others {_RECORD_TRIES} times")

    async def _counted(self, principal: str, step: int, most: int | None) -> bool:
        """``holds.<principal>`` moved by ``step``, expecting the revision read; False when
        another write came first. ``ShareFull`` when it holds ``most`` already."""
        key = f"holds.{principal}"
        entry = await self._keys.get(key)
        count = int(entry.data or 0) if entry is not None else 0
        if most is not None and count >= most:
            raise ShareFull(most)
        revision = 0 if entry is None else entry.seq
        return await won(self._keys.update(key, str(max(count + step, 0)).encode(), revision))

    async def note_base(self, kind: str, digest: str, mailbox: str) -> None:
        await self._ask_async(self._note_base(f"base.{kind}.{digest}", mailbox))

    async def _note_base(self, key: str, mailbox: str) -> None:
        # (kept once: a digest names one mailbox; one there already is the same)
        await won(self._keys.create(key, json.dumps({"mailbox": mailbox}).encode()))

    async def base_of(self, kind: str, digest: str) -> str | None:
        value = await self._ask_async(self._get(f"base.{kind}.{digest}"))
        try:
            mailbox = json.loads(value or b"{}").get("mailbox")
        except ValueError:
            return None
        return mailbox if isinstance(mailbox, str) else None


def _credential(key: str, value: bytes | None) -> tuple[str, dict[str, Any]] | None:
    """``(id, record)`` of a ``cred.<id>`` entry, or None for what is not one (a deleted key,
    a value no version of this module wrote)."""
    try:
        record = json.loads(value or b"")
        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            return None
    except ValueError:
        return None
    record.setdefault("revoked", None)
    return key.removeprefix("cred."), record


def _records(values: dict[str, bytes], name: str) -> list[dict[str, str]]:
    """The ownership records among ``values`` (those unreadable are skipped, and logged)."""
    found = []
    for key, value in values.items():
        try:
            record = json.loads(value)
            if isinstance(record.get(name), str) and isinstance(record.get("principal"), str):
                found.append(record)
                continue
        except (ValueError, AttributeError):
            pass
        log.warning("skipped an unreadable ownership record %s", key)
    return found
