"""How agents are ranked for a search: by the bundled broker's registry, and by the client over
a listing when the broker has no search (RobustMQ's default build). One ranking, here, so both
order the same agents the same way.

An ``AgentIndex`` is RobustMQ's search index (search-engine ``agent.rs``): a row per *card*
name, a later card of that name replacing the row and going to the end of the order. Only an
agent_info that parses as an A2A AgentCard is indexed, over the card's name, description and
skills (names, descriptions, tags; examples too for semantic search).

Search is what we approximate (docs/discovery.md):

* ``text``: RobustMQ's full-text (BM25) search matches an agent holding any query word, ranked
  by how many and how rare. Here: the same rule over lowercased words, scored by the sum of
  the shared words' inverse document frequencies.
* ``semantic``: RobustMQ ranks every indexed agent by embedding distance, with no threshold.
  With the ``semantic`` extra, so do we (``mq9_wire.semantic``): each card's
  ``embed_text_of`` is embedded once when indexed and ranked by cosine similarity to the
  query's. Without it, by rarity-weighted shared crude stems (``translation`` and
  ``translator`` both become ``transl``), divided by the square root of the card's stem count
  so a focused card beats one that mentions everything. ``AgentIndex.ranking`` says which.
  With embeddings the order is **hybrid** unless ``AgentIndex.hybrid`` is off:
  each card's cosine similarity plus ``HYBRID_WEIGHT`` times the share of the query's stem
  weight the card holds (``coverage``), so a card holding a field's terms of the query (the
  acronyms and jargon a model reads as noise) beats one only a little nearer in meaning, and
  a common word shared by chance moves little. docs/discovery.md gives the measurements this
  was chosen by. ``AgentIndex.standardise`` (off: it found less on the sets tuned on)
  standardises the default pair's two cosines per query first (``pair.standardised``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from string import ascii_lowercase, digits
from typing import Any, Literal

from .. import protocol as p
from .. import semantic  # its embedder() is looked up at each first use (tests replace it)
from ..protocol.errors import WireError
from .embedding import Embeds
from .pair import PairEmbedder

# A word is a run of ASCII letters and digits of the lowered text (the regex [a-z0-9]+ over
# text.lower()). Found with C calls over the whole text rather than a regex's matches, which
# hold Python's lock (and the broker's loop) for as long as a long query takes to match
# (bench/RESULTS.md).
# Every other byte of the lowered text, written as ASCII ('?' for each other character),
# becomes a space; the words are then what str.split() gives, a piece at a time.
_WORD_BYTES = bytes(b if chr(b) in ascii_lowercase + digits else ord(" ") for b in range(256))
# Characters of the spaced text split in one call: short enough that no one call holds
# Python's lock long (bench/RESULTS.md)
_WORDS_PIECE = 4096
# What a card holding all of a query's stems adds to its cosine similarity (a card holding
# part of them adds this times its share). Chosen on the sets tuned on (tests/data/
# discovery_dev.json, discovery_set.json, discovery_set_b.json), never on the held-out set:
# the most queries first over all three with either model shipped (docs/discovery.md).
HYBRID_WEIGHT = 0.3
_SUFFIXES = (  # longest first where one ends another ("ating" before "ing" and "ate")
    "ization",
    "ations",
    "ation",
    "ators",
    "ator",
    "ating",
    "ated",
    "izing",
    "ized",
    "ings",
    "ing",
    "ions",
    "ion",
    "izes",
    "ize",
    "ers",
    "er",
    "ies",
    "ied",
    "ates",
    "ate",
    "ed",
    "es",
    "ly",
    "s",
    "y",
    "e",
)
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "for",
        "from",
        "i",
        "in",
        "into",
        "is",
        "it",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "please",
        "that",
        "the",
        "this",
        "to",
        "us",
        "we",
        "with",
        "you",
        "your",
    ]
)


def stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def stems(text: str) -> set[str]:
    # each distinct word stemmed once: a 64 KiB card repeats its words thousands of times
    return {stem(w) for w in words(text) - _STOPWORDS}


def words(text: str, piece: int = _WORDS_PIECE) -> set[str]:
    """The distinct words of ``text`` (see ``_WORD_BYTES``)."""
    return set().union(*word_pieces(text, piece))


def word_pieces(text: str, piece: int = _WORDS_PIECE) -> Iterator[set[str]]:
    """The words of ``text``, split ``piece`` characters (or a little more: a piece ends at a
    space, which no word holds) at a time; each piece's words, distinct within the piece."""
    spaced = text.lower().encode("ascii", "replace").translate(_WORD_BYTES).decode("ascii")
    start = 0
    while start < len(spaced):
        end = spaced.find(" ", start + piece)
        end = len(spaced) if end < 0 else end
        yield set(spaced[start:end].split())
        start = end


def embed_text_of(card: dict[str, Any]) -> str:
    """The text RobustMQ's vector-search build embeds for a card (search-engine
    ``embed_text``): name and description, then each skill's name, description, tags (joined
    by spaces) and examples (likewise), all joined by ". "; empty tags or examples add
    nothing, an empty name or description still adds its separator."""
    parts = [card.get("name", ""), card.get("description", "")]
    for skill in card.get("skills", []):
        parts += [skill.get("name", ""), skill.get("description", "")]
        for key in ("tags", "examples"):
            if skill.get(key):
                parts.append(" ".join(map(str, skill[key])))
    return ". ".join(parts)


def search_text_of(card: dict[str, Any], *, examples: bool) -> str:
    """What RobustMQ indexes of an A2A card: name, description, and each skill's name,
    description and tags (and examples, for the embedding)."""
    parts = [card.get("name", ""), card.get("description", "")]
    for skill in card.get("skills", []):
        parts += [skill.get("name", ""), skill.get("description", "")]
        parts += map(str, skill.get("tags", []))
        if examples:
            parts += map(str, skill.get("examples", []))
    return " ".join(parts)


@dataclass(slots=True)
class AgentEntry:
    """A registered agent: its registration name, ``agent_info`` and create_time, and what a
    search reads of its card."""

    name: str
    agent_info: str
    create_time: int
    card: dict[str, Any] | None = None  # the A2A card, when agent_info is one: searchable
    words: set[str] = field(default_factory=set)
    stems: set[str] = field(default_factory=set)
    # The card's embedding, made when it is indexed: a numpy array (the semantic extra)
    vector: Any = None

    @property
    def row(self) -> tuple[str, str, int]:
        """What a store keeps of it: its name, agent_info and create_time."""
        return self.name, self.agent_info, self.create_time

    @classmethod
    def make(cls, name: str, agent_info: str, create_time: int) -> AgentEntry:
        entry = cls(name, agent_info, create_time)
        try:
            value = p.loads(agent_info.encode())
        except WireError:
            value = None
        card = p.a2a_card(value)
        if card is not None:
            entry.card = card
            entry.words = words(search_text_of(card, examples=False))
            entry.stems = stems(search_text_of(card, examples=True))
        return entry

    def listed(self) -> dict[str, Any]:
        """The entry as a DISCOVER without a query lists it."""
        return {"name": self.name, "agent_info": self.agent_info}

    @property
    def card_name(self) -> str:
        assert self.card is not None
        name: str = self.card.get("name", "")
        return name

    def found(self) -> dict[str, Any]:
        """The entry as a search hit: the index row, named by the card."""
        assert self.card is not None
        return {
            "agent_id": f"{p.TENANT}\x00{self.card_name}",
            "name": self.card_name,
            "description": self.card.get("description", ""),
            "agent_info": self.agent_info,
        }


class _Unset(Enum):
    UNSET = "unset"


_UNSET: Literal[_Unset.UNSET] = _Unset.UNSET  # AgentIndex.embedder before the first use


@dataclass
class AgentIndex:
    """The search index, by card name (see the module docstring), and its two rankings."""

    index: dict[str, AgentEntry] = field(default_factory=dict)
    # How many indexed agents hold each word and stem, kept as agents come and go.
    word_count: Counter[str] = field(default_factory=Counter)
    stem_count: Counter[str] = field(default_factory=Counter)
    # What ranks ``semantic`` searches: the process's embedder when the semantic extra is
    # installed (looked up on first use), None for the lexical ranking.
    embedder: Embeds | _Unset | None = _UNSET
    # With embeddings: fuse in the query's shared stems (the module docstring); False ranks
    # by the cosine alone, as RobustMQ's vector search does.
    hybrid: bool = True
    # With the default pair of models: each model's cosines standardised over the query's
    # candidates before they are averaged (``PairEmbedder.standardised``). Off: on the sets
    # tuned on it found fewer cards first (docs/discovery.md); kept for measuring it
    standardise: bool = False
    # The index's entries in order, made when first asked for after a change (``indexed``),
    # and the vectors of such a tuple stacked, for the tuple they were stacked from.
    _indexed: tuple[AgentEntry, ...] | None = field(default=None, repr=False)
    _matrix: tuple[tuple[AgentEntry, ...], Any] | None = field(default=None, repr=False)

    @classmethod
    def of_listing(cls, items: Iterable[Mapping[str, Any]]) -> AgentIndex:
        """The index a registry of a DISCOVER listing's agents holds: the cards among their
        ``agent_info``, the first item of a name kept (as a registry keeps the first
        registration)."""
        index = cls()
        kept: set[str] = set()
        for item in items:
            if item["name"] in kept:
                continue
            kept.add(item["name"])
            info = item.get("agent_info")
            entry = AgentEntry.make(item["name"], info if isinstance(info, str) else "", 0)
            if entry.card is not None:
                index.put_index(entry)
        return index

    def _embedder(self) -> Embeds | None:
        if isinstance(self.embedder, _Unset):
            self.embedder = semantic.embedder()
        return self.embedder

    def embed(self, entry: AgentEntry) -> None:
        """Give a card's entry its vector now (the CPU-heavy part of indexing it), so that
        indexing it later costs nothing: the broker does this off its event loop."""
        embedder = self._embedder()
        if embedder is not None and entry.card is not None and entry.vector is None:
            entry.vector = embedder.embed(embed_text_of(entry.card))

    def indexed(self) -> tuple[AgentEntry, ...]:
        """The index as it is now, in order: what a search ranks. A search may run in another
        thread on this tuple while the index changes (it holds entries, which never change)."""
        if self._indexed is None:
            self._indexed = tuple(self.index.values())
        return self._indexed

    @property
    def ranking(self) -> str:
        """Which ranking ``search_semantic`` uses: ``"embeddings"`` or ``"lexical"``."""
        return semantic.RANKING_LEXICAL if self._embedder() is None else semantic.RANKING_EMBEDDINGS

    def put_index(self, entry: AgentEntry) -> None:
        self.embed(entry)  # once per card, not per search
        self.drop_index(entry.card_name)
        self.index[entry.card_name] = entry
        self.word_count.update(entry.words)
        self.stem_count.update(entry.stems)
        self._indexed = None

    def drop_index(self, card_name: str) -> None:
        entry = self.index.pop(card_name, None)
        if entry is not None:
            self.word_count.subtract(entry.words)
            self.stem_count.subtract(entry.stems)
            self._indexed = None

    def search_text(
        self, query: str, indexed: tuple[AgentEntry, ...] | None = None
    ) -> list[AgentEntry]:
        """Indexed agents holding any query word, best first (registration order on ties).
        ``indexed``: the index as ``indexed()`` gave it (default: as it is now)."""
        return self.search_words(words(query), indexed)

    def search_words(
        self, terms: set[str], indexed: tuple[AgentEntry, ...] | None = None
    ) -> list[AgentEntry]:
        """``search_text`` of a query whose ``words`` are ``terms``."""
        indexed = self.indexed() if indexed is None else indexed
        weight = _weights(terms, self.word_count, len(indexed))
        if not weight:  # no agent holds a word of it
            return []
        scored = []
        for order, entry in enumerate(indexed):
            # fsum: exact, so agents holding the same words tie exactly whatever order their
            # sets iterate in (a plain sum's last bit followed it: ties fell by float noise)
            score = math.fsum(weight[w] for w in weight.keys() & entry.words)
            if score:
                scored.append((-score, order, entry))
        return [entry for *_, entry in sorted(scored, key=lambda s: s[:2])]

    def search_semantic(
        self, query: str, indexed: tuple[AgentEntry, ...] | None = None
    ) -> list[AgentEntry]:
        """Every indexed agent, nearest in meaning first, as a vector search ranks them
        (registration order on ties); by ``ranking``. ``indexed`` as for ``search_text``."""
        indexed = self.indexed() if indexed is None else indexed
        embedder = self._embedder()
        if embedder is not None:
            return self._nearest(query, embedder.embed_query(query), indexed)
        weight = _weights(stems(query), self.stem_count, len(indexed))
        scored = []
        for order, entry in enumerate(indexed):
            score = math.fsum(weight[s] for s in weight.keys() & entry.stems)
            scored.append((-score / math.sqrt(len(entry.stems) or 1), order, entry))
        return [entry for *_, entry in sorted(scored, key=lambda s: s[:2])]

    def _nearest(
        self, query: str, vector: Any, indexed: tuple[AgentEntry, ...]
    ) -> list[AgentEntry]:
        import numpy as np  # there when an embedder is: the semantic extra brings both

        if not indexed:
            return []
        stacked = self._matrix
        if stacked is None or stacked[0] is not indexed:
            stacked = self._matrix = (indexed, np.stack([entry.vector for entry in indexed]))
        # unit vectors: the dot product is the cosine similarity
        embedder = self.embedder
        if self.standardise and isinstance(embedder, PairEmbedder):
            score = embedder.standardised(stacked[1], vector)
        else:
            score = stacked[1] @ vector
        if self.hybrid and (shares := self.coverage(query, indexed)):
            # in one call: a common stem is held by every card, and an item at a time cost
            # more than the search
            at = np.fromiter(shares, dtype=np.intp, count=len(shares))
            gain = HYBRID_WEIGHT * np.fromiter(shares.values(), float, count=len(shares))
            score[at] += gain.astype(score.dtype)
        order = np.argsort(-score, kind="stable")
        return [indexed[i] for i in order]

    def coverage(self, query: str, indexed: tuple[AgentEntry, ...]) -> dict[int, float]:
        """For each card of ``indexed`` holding a stem of ``query`` (by its place there), the
        share of the query's stem weight it holds: each stem weighs its rarity among the
        cards, a stem no card holds the most (it still counts against every card)."""
        terms = stems(query)
        weight = _weights(terms, self.stem_count, len(indexed))
        if not weight:
            return {}
        total = sum(weight.values()) + (len(terms) - len(weight)) * _rarest(len(indexed))
        shares: dict[int, float] = {}
        # a share per distinct set of stems held (most cards holding any hold the same one or
        # two), summed once
        share_of: dict[frozenset[str], float] = {}
        known = weight.keys()
        for i, entry in enumerate(indexed):
            held = known & entry.stems
            if held:
                key = frozenset(held)
                share = share_of.get(key)
                if share is None:
                    share = share_of[key] = math.fsum(weight[s] for s in held) / total
                shares[i] = share
        return shares


def _weights(terms: set[str], counts: Counter[str], indexed: int) -> dict[str, float]:
    """Each query term's rarity among the ``indexed`` agents (inverse document frequency);
    a term no agent holds matches none, and is left out (a long query costs what its known
    words cost, per agent: its unknown words are left in one call)."""
    held = [(t, n) for t in terms & counts.keys() if (n := counts[t])]
    return {t: _rarity(indexed, n) for t, n in held}


def _rarity(indexed: int, holders: int) -> float:
    return math.log(1 + indexed / (1 + holders)) + 1


def _rarest(indexed: int) -> float:
    """The weight of a term no agent holds (as if one did: the rarest possible)."""
    return _rarity(indexed, 0)
