"""The agent registry as RobustMQ keeps it: one entry per name, the first registration kept.

An entry is a name, its ``agent_info`` (the A2A card, or the ``payload`` of a
``{name, payload}`` REGISTER) and its create_time. Only an agent_info that parses as an A2A
AgentCard is indexed for search.

The search index is RobustMQ's too (search-engine ``agent.rs``, meta-service
``raft/route/mq9.rs``): a row per *card* name (``agent_id`` is ``"default\x00" + card name``),
written when a registration is accepted, replacing any row of that card name, and removed by
UNREGISTER of the *registration* name. The two differ only when a ``{name, payload}`` REGISTER
carries a card of another name: a search hit then shows the card's name, and unregistering the
registration leaves the card searchable.

How a search ranks is ``mq9_wire.semantic.ranking`` (``AgentIndex``), which the client
also ranks a listing with when a broker has no search.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mq9_wire import protocol as p
from mq9_wire.semantic.ranking import AgentEntry, AgentIndex


@dataclass
class AgentRegistry(AgentIndex):
    """The registrations by name, over the search index of their cards."""

    entries: dict[str, AgentEntry] = field(default_factory=dict)  # by registration name
    # Each entry as a listing shows it, encoded once, with the entry it was encoded from: a
    # listing does not encode every card again (bench/HOTPATH.md)
    _listed: dict[str, tuple[AgentEntry, bytes]] = field(default_factory=dict, repr=False)
    changes: int = 0  # registrations and unregistrations so far: what a listing was made of

    def __len__(self) -> int:
        return len(self.entries)

    def register(self, entry: AgentEntry, *, index: bool = True) -> None:
        """Keep ``entry`` unless its name is taken (RobustMQ keeps the first registration);
        ``index``: its card indexed too (an engine's copy takes the index rows on their own)."""
        if entry.name in self.entries:
            return
        self.entries[entry.name] = entry
        self.changes += 1
        if index and entry.card is not None:
            self.put_index(entry)

    def unregister(self, name: str, *, index: bool = True) -> AgentEntry | None:
        """Remove the registration ``name``, and (``index``) the index row named ``name``
        (RobustMQ removes ``agent_id(tenant, name)``, whatever card the registration held)."""
        entry = self.entries.pop(name, None)
        if entry is not None:
            if index:
                self.drop_index(name)
            self._listed.pop(name, None)
            self.changes += 1
        return entry

    def listed(self, entry: AgentEntry) -> bytes:
        """``entry`` as a DISCOVER listing holds it, encoded. Safe on another thread while
        the registry changes: an entry never changes, and a cached item is taken only for the
        very entry it was encoded from."""
        cached = self._listed.get(entry.name)
        if cached is not None and cached[0] is entry:
            return cached[1]
        item = p.encode(entry.listed())
        self._listed[entry.name] = (entry, item)
        return item

    def listing(self) -> list[AgentEntry]:
        return sorted(self.entries.values(), key=lambda e: e.name)
