"""A2A agent cards: what RobustMQ reads as an AgentCard (and so indexes for search), the cards
the client builds, and the agents a DISCOVER answers with (docs/protocol-commands.md §7)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from typing import Any

from .errors import MalformedReply, Mq9Error
from .quoting import quoted
from .values import check_address

# An A2A AgentCard as RobustMQ reads it (a2a-types 0.2.0: prost types with pbjson's proto3 JSON
# mapping; docs/protocol-commands.md §7.1): no field is required, a field may be named in camelCase
# or snake_case, an unknown key means "not a card", and null is refused for strings, lists and maps.
# RobustMQ's REGISTER accepts such a card bare and stores it re-serialized (camelCase, fields in
# proto order, empty ones left out); only cards are indexed for search. A field maps to the type its
# value must have; ``object`` (a message, or an optional string) takes null too.
A2A_CARD_FIELDS: dict[str, type] = {
    "name": str,
    "description": str,
    "supportedInterfaces": list,
    "provider": object,
    "version": str,
    "documentationUrl": object,  # optional string: null allowed
    "capabilities": object,
    "securitySchemes": dict,
    "securityRequirements": list,
    "defaultInputModes": list,
    "defaultOutputModes": list,
    "skills": list,
    "signatures": list,
    "iconUrl": object,
}
A2A_SKILL_FIELDS: dict[str, type] = dict.fromkeys(("id", "name", "description"), str)
A2A_SKILL_FIELDS |= dict.fromkeys(
    ("tags", "examples", "inputModes", "outputModes", "securityRequirements"), list
)
A2A_INTERFACE_FIELDS: dict[str, type] = dict.fromkeys(
    ("url", "protocolBinding", "tenant", "protocolVersion"), str
)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def card_field(key: str) -> str | None:
    """The AgentCard field ``key`` names (in camelCase or snake_case), or None."""
    name = key if key in A2A_CARD_FIELDS else _camel(key)
    return name if name in A2A_CARD_FIELDS else None


def _proto_message(value: object, fields: dict[str, type]) -> dict[str, Any] | None:
    """``value`` read as one proto message and written back as pbjson writes it, or None
    when pbjson would refuse it."""
    if not isinstance(value, dict):
        return None
    read: dict[str, Any] = {}
    for key, item in value.items():
        name = key if key in fields else _camel(key)
        kind = fields.get(name)
        if kind is None or name in read:  # an unknown key, or a field named twice
            return None
        if item is None:
            if kind is not object:
                return None
            continue
        if not isinstance(item, kind):
            return None
        read[name] = item
    nested = {"skills": A2A_SKILL_FIELDS, "supportedInterfaces": A2A_INTERFACE_FIELDS}
    for name, item_fields in nested.items():
        if name in read and name in fields:
            items = [_proto_message(item, item_fields) for item in read[name]]
            if any(item is None for item in items):
                return None
            read[name] = items
    # pbjson leaves out what holds its default: empty strings and lists
    return {name: read[name] for name in fields if name in read and read[name] not in ("", [])}


def a2a_card(value: object) -> dict[str, Any] | None:
    """``value`` as RobustMQ stores it if it reads as an A2A AgentCard, else None."""
    return _proto_message(value, A2A_CARD_FIELDS)


# -- agent cards as the client builds and reads them ---------------------------------------------

MQ9_URL_SCHEME = "mq9://"
A2A_CARD_VERSION = "1.0.0"
A2A_MODES = ["text/plain"]


def mq9_interface(mailbox: str) -> dict[str, str]:
    """The A2A ``supportedInterfaces`` entry that says "reach me at this mq9 mailbox". It is a
    field of the A2A AgentCard itself, so it survives RobustMQ re-serializing the card (a
    top-level ``mailbox`` field is no card field at all, and makes RobustMQ refuse the card)."""
    return {"url": MQ9_URL_SCHEME + mailbox, "protocolBinding": "mq9", "protocolVersion": "1.0"}


def agent_card(
    name: str,
    *,
    mailbox: str | None = None,
    description: str | None = None,
    skills: list[str] | list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An A2A AgentCard RobustMQ indexes for search. ``skills`` are strings or dicts with
    ``name`` (and optional ``id``, ``description``, ``tags``, ``examples``); ``mailbox`` goes
    into ``supportedInterfaces`` as ``mq9://<mailbox>``. Raises ``ValueError`` on bad input."""
    if not isinstance(name, str) or not name:
        raise ValueError("an agent card needs a non-empty string name")
    if description is not None and not isinstance(description, str):
        raise ValueError("an agent card's description must be a string")
    if mailbox is not None:
        try:
            check_address(mailbox)
        except Mq9Error:
            raise ValueError(
                f"an agent card's mailbox must be a mailbox address, not {quoted(mailbox)}"
            ) from None
    card = {
        "name": name,
        "description": description or "",
        "version": A2A_CARD_VERSION,
        "supportedInterfaces": [] if mailbox is None else [mq9_interface(mailbox)],
        "defaultInputModes": list(A2A_MODES),
        "defaultOutputModes": list(A2A_MODES),
        "skills": card_skills(skills or []),
    }
    return a2a_card(card) or card  # as RobustMQ stores it, so what is sent is what is kept


def card_skills(skills: object) -> list[dict[str, Any]]:
    """A2A skills from ``skills`` as ``agent_card`` takes them; ``ValueError`` on anything else."""
    if not isinstance(skills, (list, tuple)):
        raise ValueError("an agent card's skills must be a list of strings or dicts")
    return [_skill(skill) for skill in skills]


def _skill(skill: object) -> dict[str, Any]:
    if isinstance(skill, str) and skill.strip():
        skill = {"name": skill, "tags": [skill]}
    if not isinstance(skill, dict) or not isinstance(skill.get("name"), str) or not skill["name"]:
        raise ValueError(f"a skill is a non-empty string or a dict with a name, not {skill!r}")
    skill = {key: value for key, value in skill.items() if value is not None}
    rest = card_skill_fields(skill)
    name = skill["name"]
    description = skill.get("description", name)
    tags = skill.get("tags", [])
    examples = skill.get("examples", [])
    skill_id = skill.get("id")
    if not isinstance(description, str) or not isinstance(skill_id, (str, type(None))):
        raise ValueError(f"a skill's description and id must be strings: {skill!r}")
    if not _strings(tags) or not _strings(examples):
        raise ValueError(f"a skill's tags and examples must be lists of strings: {skill!r}")
    return {
        "id": skill_id or re.sub(r"\s+", "-", name.strip().lower()),
        "name": name,
        "description": description,
        "tags": list(tags),
        "examples": list(examples),
        **rest,
    }


_SKILL_BASICS = {"id", "name", "description", "tags", "examples"}


def card_skill_fields(skill: dict[str, Any]) -> dict[str, Any]:
    """A skill's other A2A fields (inputModes, ...), camelCased; a key that is no A2A skill
    field is refused by name (RobustMQ would not read the card, and the field would be lost)."""
    rest = {}
    for key, value in skill.items():
        name = _camel(key)
        if name not in A2A_SKILL_FIELDS:
            raise ValueError(
                f"skill field {key!r} is no A2A AgentSkill field: RobustMQ would not read the "
                f"card, so it would be lost (a skill has {', '.join(A2A_SKILL_FIELDS)})"
            )
        if name not in _SKILL_BASICS:
            rest[name] = value
    return rest


def _strings(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def card_mailbox(card: Mapping[str, Any]) -> str | None:
    """The mailbox a card names: its ``mailbox`` field, else the first ``mq9://`` interface."""
    mailbox = card.get("mailbox")
    if isinstance(mailbox, str) and mailbox:
        return mailbox
    interfaces = card.get("supportedInterfaces")
    for interface in interfaces if isinstance(interfaces, list) else ():
        url = interface.get("url") if isinstance(interface, dict) else None
        if isinstance(url, str) and url.startswith(MQ9_URL_SCHEME) and len(url) > 6:
            return url[len(MQ9_URL_SCHEME) :]
    return None


def normalize_agent(item: object) -> dict[str, Any]:
    """One DISCOVER item (a listing's ``{name, agent_info}`` or a search's ``{agent_id, name,
    description, agent_info}``) as the card's fields plus ``name`` and ``mailbox`` (None when
    the card names none); when ``agent_info`` is no JSON object, ``name``, ``mailbox`` None and
    the raw ``agent_info``. Raises ``Mq9Error`` on an item that is not an agent."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise MalformedReply(f"malformed agent in the broker's reply: {item!r:.200}")
    info = item.get("agent_info")
    card: object = None
    if isinstance(info, str):
        with contextlib.suppress(ValueError, RecursionError):
            card = json.loads(info)
    if isinstance(card, dict):
        return {**card, "name": item["name"], "mailbox": card_mailbox(card)}
    return {"name": item["name"], "mailbox": None, "agent_info": info}
