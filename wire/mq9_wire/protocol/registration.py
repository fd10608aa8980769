"""What a user registers, turned into the A2A AgentCard RobustMQ stores and indexes.

RobustMQ's REGISTER keeps an A2A AgentCard (searchable) or a raw ``{name, payload}`` (never
searchable): any other field makes the body no card, and ``{name, mailbox, payload}`` is kept
raw with ``mailbox`` ignored (docs/protocol-commands.md §7.1). The mq9 documents and the official
SDKs register such bodies, so each given field is put where the card holds it, or refused by name:

- ``payload`` (text) becomes the card's ``description``; a payload that is itself an A2A card
  in JSON is that card;
- ``mailbox`` (an address, ``mq9://<address>`` or the documents' ``mq9://broker/<address>``)
  becomes an mq9 entry of ``supportedInterfaces``;
- ``agent_card`` (the official SDK's A2A agent sends the card there) is the card;
- ``capabilities`` as a list of strings or skills (an older form) become ``skills``;
- the a2a-sdk 0.3 names ``url``, ``preferred_transport``, ``protocol_version`` and
  ``additional_interfaces`` become ``supportedInterfaces`` entries;
- every other field must be an AgentCard field (camelCase or snake_case); ``None`` means "not
  given", as it does to RobustMQ's serde.
"""

from __future__ import annotations

import json
from typing import Any

from .cards import (
    MQ9_URL_SCHEME,
    a2a_card,
    agent_card,
    card_field,
    card_mailbox,
    card_skill_fields,
    card_skills,
    mq9_interface,
)
from .errors import Mq9Error
from .quoting import quoted
from .values import check_address

# The URL forms a mailbox may be given in; the mq9 documents write mq9://broker/<address>.
_MAILBOX_PREFIXES = ("mq9://broker/", MQ9_URL_SCHEME)
# a2a-sdk 0.3 fields that A2A 1.0 (the card RobustMQ reads) holds in supportedInterfaces
_INTERFACE_FIELDS = ("url", "preferred_transport", "protocol_version", "additional_interfaces")


def is_raw(body: dict[str, Any]) -> bool:
    """RobustMQ's raw registration, sent as it is: exactly a name and a text payload."""
    return set(body) == {"name", "payload"} and isinstance(body["payload"], str)


def card_for(body: dict[str, Any]) -> dict[str, Any]:
    """The A2A card to register for ``body``, as RobustMQ stores it. Raises ``ValueError``
    naming the field that is missing, malformed or has no place in a card."""
    given = _given(body)
    name = given.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ValueError("an agent card needs a non-empty string name")
    card: dict[str, Any] = {}
    if "agent_card" in given:
        _merge(card, _card_field("agent_card", given.pop("agent_card")), "agent_card")
    if "payload" in given:
        _merge(card, _payload(given.pop("payload")), "payload")
    mailbox = _mailbox(given.pop("mailbox")) if "mailbox" in given else None
    legacy = given.pop("capabilities") if isinstance(given.get("capabilities"), list) else []
    interfaces = _sdk_interfaces(given)
    for key, value in given.items():
        _merge(card, _card_field(key, {key: value}), key)
    if card.setdefault("name", name) != name:
        raise ValueError(f"the card inside names another agent ({card['name']!r}) than {name!r}")
    built = agent_card(name, mailbox=mailbox, skills=legacy)  # version, modes, mq9 interface
    for key in ("version", "defaultInputModes", "defaultOutputModes"):
        card.setdefault(key, built[key])
    card["skills"] = [*card.get("skills", []), *built.get("skills", [])]
    card["supportedInterfaces"] = [*card.get("supportedInterfaces", []), *interfaces]
    if mailbox is not None and card_mailbox(card) != mailbox:
        card["supportedInterfaces"].append(mq9_interface(mailbox))
    read = a2a_card(card)
    if read is None:  # every part was checked above; a miss here is a bug of ours
        raise ValueError(f"the agent card built for {name!r} is no A2A AgentCard: {card!r:.300}")
    return read


def _card_field(label: str, value: Any) -> dict[str, Any]:
    """``value`` read as (part of) an A2A card, or an error that names what does not fit."""
    if not isinstance(value, dict):
        raise ValueError(f"{label} must be an A2A AgentCard object, not {type(value).__name__}")
    value = _given(value)
    if "skills" in value:
        value["skills"] = _skills(value["skills"])
    read = a2a_card(value)
    if read is not None:
        return read
    for key, item in value.items():
        if a2a_card({key: item}) is None:
            known = card_field(key) is not None
            why = "has the wrong type" if known else "is no A2A AgentCard field"
            where = "" if label == key else f" in {label}"
            raise ValueError(
                f"field {key!r}{where} {why}: RobustMQ would not read the card, so the field "
                "would be lost; remove it or put it in description or skills"
            )
    raise ValueError(f"{label} is no A2A AgentCard")


def _skills(skills: Any) -> list[Any]:
    """A card's skills: a string becomes a skill (``protocol.card_skills``); an A2A skill is
    kept as given, once it has a name and only AgentSkill fields (an unknown one is named)."""
    if not isinstance(skills, list):
        raise ValueError("an agent card's skills must be a list of strings or dicts")
    kept = []
    for skill in skills:
        if isinstance(skill, dict) and isinstance(skill.get("name"), str) and skill["name"]:
            card_skill_fields(skill)
            kept.append(skill)
        else:  # a string, or an error naming what is wrong
            kept += card_skills([skill])
    return kept


def _given(value: Any) -> Any:
    """``value`` without the object fields that are None (at any depth): None is "not given",
    in pydantic's dumps and to RobustMQ's serde alike."""
    if isinstance(value, dict):
        return {k: _given(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_given(item) for item in value]
    return value


def _payload(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, str):
        raise ValueError(f"payload must be text (the agent's description), not {payload!r:.80}")
    try:
        inner = json.loads(payload)
    except ValueError:
        inner = None
    if isinstance(inner, dict) and a2a_card(inner) is not None:
        return _card_field("payload", inner)
    return {"description": payload}


def _mailbox(value: Any) -> str:
    address = value
    if isinstance(value, str):
        for prefix in _MAILBOX_PREFIXES:
            if value.startswith(prefix):
                address = value[len(prefix) :]
                break
    try:
        return check_address(address)
    except Mq9Error:
        raise ValueError(
            f"mailbox must be a mailbox address (or mq9://<address>), not {quoted(value)}"
        ) from None


def _sdk_interfaces(given: dict[str, Any]) -> list[dict[str, Any]]:
    """supportedInterfaces entries for an a2a-sdk 0.3 card's url and additional_interfaces
    (taken out of ``given``)."""
    fields = {key: given.pop(key) for key in _INTERFACE_FIELDS if key in given}
    entries = []
    if "url" in fields:
        entries.append(
            {
                "url": fields["url"],
                "protocolBinding": fields.get("preferred_transport", "JSONRPC"),
                "protocolVersion": fields.get("protocol_version", ""),
            }
        )
    elif {"preferred_transport", "protocol_version"} & fields.keys():
        raise ValueError("preferred_transport and protocol_version describe url: give url too")
    for extra in fields.get("additional_interfaces", []):
        if not isinstance(extra, dict) or set(extra) - {"url", "transport"}:
            raise ValueError(f"additional_interfaces holds {{url, transport}} items, not {extra!r}")
        entries.append({"url": extra.get("url", ""), "protocolBinding": extra.get("transport", "")})
    for entry in entries:
        if not all(isinstance(v, str) for v in entry.values()):
            raise ValueError(f"an interface's url, transport and version are text: {entry!r}")
    return [{k: v for k, v in entry.items() if v} for entry in entries]


def _merge(card: dict[str, Any], part: dict[str, Any], label: str) -> None:
    """Add ``part`` to ``card``; a field given twice must say the same thing both times."""
    for key, value in part.items():
        if key in card and card[key] != value:
            raise ValueError(
                f"{label} gives {key} {value!r:.80}, which the card already has as "
                f"{card[key]!r:.80}: say it once"
            )
        card[key] = value
