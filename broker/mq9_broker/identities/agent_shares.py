"""``AgentShares``: the registrations each agent holds, counted against its own share
(``--max-agents-per-sender``) in the identity store, so that one agent filling its share is
refused alone and every other agent's REGISTER is answered. A REGISTER or UNREGISTER of a name
takes the name's turn (``turn``) from its look-up to its record, so the share counted and the
registration written change together. ``Ownership`` (ownership.py) holds one and hands the
engine's REGISTER and UNREGISTER steps to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from mq9_wire import protocol as p
from mq9_wire.protocol.names import is_reserved

from ..engine.owned import Answering, Keep, Undo
from .owners import TAKEN, not_recorded, refused
from .store import BaseIdentityStore, CredentialError, OwnedByAnother, ShareFull

log = logging.getLogger("mq9_broker.identities.ownership")

# An agent at its share of the registry: one line, its own bound and no count of any
# other's ("agent limit reached": read as LimitReached, wire/protocol/errors.py)
SHARE_FULL = (
    "agent limit reached for you: one agent holds at most %d registrations on this broker "
    "(--max-agents-per-sender); unregister one of yours to register another"
)


class _Turn:
    """One agent name's turn (``AgentShares.turn``): its lock, and how many requests hold or
    await it."""

    __slots__ = ("held", "lock", "waiting")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0
        # the hold an UNREGISTER holding the turn read before its registration was removed
        # (the store's version of it; None: not its agent's)
        self.held: int | None = None


class AgentShares:
    """Each agent's registrations counted against its share, and each agent name's turn."""

    def __init__(self, store: BaseIdentityStore, engine: Answering) -> None:
        self.store = store
        self.engine = engine
        self.refusals = 0  # REGISTERs refused at their agent's own share
        self._turns: dict[str, _Turn] = {}  # agent name -> its requests' turn

    @contextlib.asynccontextmanager
    async def turn(self, name: str) -> AsyncIterator[None]:
        """The turn of a request naming agent ``name`` (REGISTER, UNREGISTER), from
        its look-up to its record: an UNREGISTER landing while a REGISTER of the name is
        answered waits for it, so the share counted and the registration written change
        together (before, it gave the share back before the REGISTER's write landed, and
        the name stayed registered uncounted). Kept only while a request holds or awaits it."""
        turn = self._turns.get(name)
        if turn is None:
            turn = self._turns[name] = _Turn()
        turn.waiting += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.waiting -= 1
            if not turn.waiting:
                del self._turns[name]

    def _share(self) -> int | None:
        """The registrations one agent may hold (``--max-agents-per-sender``), read
        from the engine's limits as each REGISTER comes (None: no share, the bound in all
        alone)."""
        limits = getattr(self.engine, "limits", None)
        return getattr(limits, "max_agents_per_sender", None)

    async def claim(self, principal: str, name: Any) -> tuple[bytes | None, Undo | None]:
        """Before a REGISTER of ``name``: the registration counted against its
        agent's own share, decided by the store in one step (identities/store.py
        ``hold_agent``), so one agent filling its share is refused alone and every other
        agent's REGISTER is answered (the registry's bound in all, ``--max-agents``, stays
        the engine's). The refusal names the agent's own share and no count of another's;
        or the hold's undoing, for when the REGISTER is refused after it."""
        most = self._share()
        if most is None or not (isinstance(name, str) and name) or is_reserved(name):
            return None, None
        try:
            taken = await self.store.hold_agent(name, principal, most)
        except ShareFull:
            self.refusals += 1
            return refused("REGISTER", SHARE_FULL % most), None
        except OwnedByAnother:  # (registered a moment ago through another broker)
            return refused("REGISTER", f"agent {p.quoted(name)} {TAKEN}"), None
        except CredentialError as exc:
            log.error("REGISTER by %r not done: its share was not counted: %s", principal, exc)
            return refused("REGISTER", f"its share could not be counted ({exc}); ask again"), None
        if not taken:
            return None, None  # (held already: registered again, counted once)

        async def undo() -> None:
            await self.store.release_agent(name, principal)

        return None, undo

    async def read_hold(self, principal: str, name: Any) -> tuple[bytes | None, Undo | None]:
        """Before an UNREGISTER of ``name``: the version of its agent's hold, read
        before the registration is removed and kept on the name's turn for the record step.
        A REGISTER of the name through another broker renews the hold before it writes its
        registration, so a hold renewed after this read is that REGISTER's, not this
        UNREGISTER's to give back: a race leaves the count one too high (the racer's own
        share smaller), never one too low."""
        turn = self._turns.get(name) if isinstance(name, str) else None
        if turn is None:
            return None, None
        try:
            turn.held = await self.store.held_agent(name, principal)
        except CredentialError as exc:
            turn.held = None  # (nothing given back: the count errs high, and is said)
            log.error("UNREGISTER by %r: its hold could not be read: %s", principal, exc)
        return None, None

    def released(self, principal: str, name: Any) -> Keep | None:
        """An UNREGISTER of ``name`` that removed its registration (engine/owned.py
        records nothing for one that removed none): the agent's share has room again, the
        hold read before the removal given back (the name stays its registrant's)."""
        turn = self._turns.get(name) if isinstance(name, str) else None
        held = None if turn is None else turn.held
        if turn is not None:
            turn.held = None  # (read once: the name's next UNREGISTER reads its own)
        if held is None:
            return None

        async def keep() -> bytes | None:
            try:
                await self.store.release_agent(name, principal, held)
            except CredentialError as exc:
                return not_recorded("UNREGISTER", principal, exc, "done, its share not freed")
            return None

        return keep

    async def held_again(self, principal: str, name: str) -> bytes | None:
        """The hold of a REGISTER asserted again after its registration is written: an
        UNREGISTER through another broker that read the hold after this REGISTER took it, and
        gave it back before this write landed, left the registration uncounted; taken again
        here (renewed where it stands). Past the share meanwhile (the room it gave back
        taken by another name), the registration is removed and the REGISTER refused."""
        most = self._share()
        if most is None or is_reserved(name):
            return None
        try:
            await self.store.hold_agent(name, principal, most)
        except ShareFull:
            self.refusals += 1
            body = p.encode({"name": name})
            await self.engine.handle(p.AGENT_UNREGISTER, None, body)  # (the broker's own)
            return refused("REGISTER", SHARE_FULL % most)
        except (OwnedByAnother, CredentialError) as exc:
            log.error("REGISTER by %r: its hold not asserted again: %s", principal, exc)
        return None
