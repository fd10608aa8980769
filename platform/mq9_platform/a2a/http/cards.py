"""HTTP A2A agents in the mq9 registry: a card read from its well-known URL
(``/.well-known/agent-card.json``) is registered beside the mq9 agents, so ``agent_discover``
ranks it with them and ``call_agent`` reaches it over HTTP (docs/a2a-gateway.md).

    importer = CardImporter(client, ["https://agents.example.com"], hosts=HostPolicy.from_env())
    await importer.refresh()        # once; or `await importer.run(every=300)`

What is registered is what the registry keeps of an A2A card (name, description, skills, the
HTTP interface, streaming) and an extension naming the URL it was read from: the importer
replaces only cards it imported from that URL, never an agent that registered itself, and
removes its card when the URL answers 404/410, or fails ``misses`` refreshes in a row. Reads go
only to hosts the allow-list lets (``hosts.py``), the card's own interface included. Needs the
``a2a`` extra.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mq9_wire.protocol import card_skills, clipped

from ..._http.hosts import HostPolicy, HostRefused
from ...client.client import Mq9Client
from .. import mail as w
from .caller import REQUEST_TIMEOUT, AgentUnreachable, fetch_card

# the name it had beside the core, which operators' logging configs may name
log = logging.getLogger("mq9_platform.a2a.cards_import")

GONE = (404, 410)  # the answers that say a card is gone for good
MAX_DESCRIPTION_CHARS = 2000
MAX_SKILLS = 32
# Card URLs read at once by one refresh: each read ends at its own deadline, so a URL that
# answers a byte at a time delays only its own import, never the others'.
PARALLEL_READS = 8


class ImportRefused(Exception):
    """A card that cannot be imported, in words that say why."""


def imported_from(card: Mapping[str, Any]) -> str | None:
    """The URL a registered card was imported from (None: an agent registered it itself)."""
    capabilities = card.get("capabilities")
    extensions = capabilities.get("extensions") if isinstance(capabilities, dict) else None
    for ext in extensions if isinstance(extensions, list) else ():
        if isinstance(ext, dict) and ext.get("uri") == w.IMPORTED_EXTENSION:
            source = ext.get("description")
            return source if isinstance(source, str) else None
    return None


def registry_name(card: Mapping[str, Any]) -> str:
    """The registry name of an imported card: its name in lower case, words joined by '-'."""
    name = re.sub(r"[^a-z0-9._-]+", "-", str(card.get("name") or "").lower()).strip("-.")
    if not name:
        raise ImportRefused("the card has no name: give the importer one")
    return name[:120]


def _skill(skill: object) -> dict[str, Any] | None:
    if not isinstance(skill, dict) or not isinstance(skill.get("name"), str):
        return None
    kept = {k: skill[k] for k in ("id", "name", "description") if isinstance(skill.get(k), str)}
    for key in ("tags", "examples"):
        values = skill.get(key)
        if isinstance(values, list) and all(isinstance(v, str) for v in values):
            kept[key] = values[:16]
    return kept


def registry_card(card: Mapping[str, Any], source: str, name: str | None = None) -> dict[str, Any]:
    """What the registry keeps of the HTTP A2A agent ``card`` read at ``source``."""
    interface = w.http_interface(dict(card))
    if interface is None:
        raise ImportRefused(f"the card at {source} names no HTTP A2A interface (JSONRPC)")
    capabilities = card.get("capabilities")
    streaming = isinstance(capabilities, dict) and capabilities.get("streaming") is True
    skills = [s for s in map(_skill, card.get("skills") or []) if s][:MAX_SKILLS]
    modes = {
        key: [m for m in card.get(key) or [] if isinstance(m, str)][:8]
        for key in ("defaultInputModes", "defaultOutputModes")
    }
    version = card.get("version")
    return {
        "name": name or registry_name(card),
        "description": clipped(str(card.get("description") or ""), MAX_DESCRIPTION_CHARS),
        "version": version if isinstance(version, str) and version else "1.0.0",
        "supportedInterfaces": [interface],
        "capabilities": {
            "streaming": streaming,
            "extensions": [{"uri": w.IMPORTED_EXTENSION, "description": source}],
        },
        **{key: value for key, value in modes.items() if value},
        "skills": card_skills(skills),
    }


async def _registered(client: Mq9Client, name: str) -> dict[str, Any] | None:
    return next((a for a in await client.agent_discover() if a.get("name") == name), None)


def _same(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return all(old.get(k) == v for k, v in new.items())


async def import_card(
    client: Mq9Client,
    url: str,
    *,
    hosts: HostPolicy,
    name: str | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> dict[str, Any]:
    """Read the A2A card at ``url`` (within ``timeout`` seconds in all, however slowly it is
    sent) and register it (replacing our older import of it); the card registered.
    ``ImportRefused`` or ``AgentUnreachable`` say why not."""
    card = await fetch_card(url, hosts, timeout=timeout)
    entry = registry_card(card, url, name)
    try:  # the agent's own address must be reachable too, or calls would fail later
        await hosts.check(entry["supportedInterfaces"][0]["url"])
    except HostRefused as exc:
        raise ImportRefused(f"the card at {url} names its agent at a refused host: {exc}") from None
    existing = await _registered(client, entry["name"])
    if existing is not None:
        if imported_from(existing) != url:
            raise ImportRefused(
                f"the name {entry['name']!r} is another agent's in the registry: import the "
                "card under another name"
            )
        if _same(existing, entry):
            return entry
        await client.agent_unregister(entry["name"])  # the registry keeps a name's first card
    await client.agent_register(entry)
    return entry


async def remove_import(client: Mq9Client, url: str, name: str) -> bool:
    """Unregister ``name`` if it is our import of ``url`` (never another agent)."""
    existing = await _registered(client, name)
    if existing is None or imported_from(existing) != url:
        return False
    await client.agent_unregister(name)
    return True


class CardImporter:
    """Keeps the cards at ``urls`` (a URL, or URL -> registry name) in the registry: imported,
    refreshed by ``refresh()`` or ``run(every=...)``, removed when gone. Each URL is read
    within ``timeout`` seconds, ``PARALLEL_READS`` at a time: a slow one is a miss of its own."""

    def __init__(
        self,
        client: Mq9Client,
        urls: Iterable[str] | Mapping[str, str | None],
        *,
        hosts: HostPolicy,
        misses: int = 3,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.client = client
        self.urls: dict[str, str | None] = (
            dict(urls) if isinstance(urls, Mapping) else dict.fromkeys(urls)
        )
        self.hosts = hosts
        self.misses = misses
        self.timeout = timeout
        self.names: dict[str, str] = {}  # url -> the name its card is registered under
        self.failures: dict[str, int] = {}
        self.errors: dict[str, str] = {}  # url -> why its last refresh failed

    async def refresh(self) -> dict[str, str]:
        """Import each card again, side by side; the registry name each URL's card has now."""
        room = asyncio.Semaphore(PARALLEL_READS)

        async def one(url: str, name: str | None) -> None:
            async with room:
                await self._refresh_one(url, name)

        done = await asyncio.gather(
            *(one(url, name) for url, name in self.urls.items()), return_exceptions=True
        )
        for failed in done:  # the broker away, say: said once every import has ended
            if isinstance(failed, BaseException):
                raise failed
        return dict(self.names)

    async def _refresh_one(self, url: str, name: str | None) -> None:
        try:
            entry = await import_card(
                self.client, url, hosts=self.hosts, name=name, timeout=self.timeout
            )
        except (AgentUnreachable, ImportRefused) as exc:
            self.errors[url] = str(exc)
            self.failures[url] = self.failures.get(url, 0) + 1
            gone = isinstance(exc, AgentUnreachable) and exc.status in GONE
            log.warning("card import from %s failed: %s", url, exc)
            known = self.names.get(url) or name
            if known and (gone or self.failures[url] >= self.misses):
                await remove_import(self.client, url, known)
                self.names.pop(url, None)
            return
        self.failures.pop(url, None)
        self.errors.pop(url, None)
        self.names[url] = entry["name"]

    async def run(self, every: float = 300.0) -> None:
        """``refresh()`` every ``every`` seconds, until cancelled."""
        while True:
            try:
                await self.refresh()
            except Exception:  # the broker away, say: the next round tries again
                log.exception("card import round failed")
            await asyncio.sleep(every)
