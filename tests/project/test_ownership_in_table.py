"""Ownership is the engine's own (#74): each command's entry in the engine's table names the
ownership check and record it needs (``Command.owned``, engine/owned.py), and the engine makes
them as part of answering. ``identities/`` keeps the gate and the logins (gate.py) and the
policy (who may do what: ownership.py, over owners.py and agent_shares.py): it finds no
request's command again (no ``command_for``) and branches on no command (no ``verb == ...``
chain, no comparison with a command's subject).

Read from the source (``ast``), as the rule is about how the code is written.
"""

from __future__ import annotations

import ast
from pathlib import Path

from mq9_broker.engine import owned
from mq9_broker.engine.engine import COMMANDS
from mq9_wire import protocol as p

ROOT = Path(__file__).resolve().parents[2]
IDENTITIES = ROOT / "broker" / "mq9_broker" / "identities"
OWNERSHIP = tuple(
    IDENTITIES / f"{name}.py" for name in ("gate", "ownership", "owners", "agent_shares")
)
# The protocol's names of the commands' subjects (p.MSG_SEND, p.AGENT_REGISTER, ...)
SUBJECT_PREFIXES = ("MSG_", "MAILBOX_", "AGENT_")


def _tree() -> ast.Module:
    """The gate's and the policy's modules, read as one."""
    body: list[ast.stmt] = []
    for path in OWNERSHIP:
        body += ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body
    return ast.Module(body=body, type_ignores=[])


def _names_a_command(node: ast.expr) -> bool:
    """``verb`` or ``command`` (what the old dispatcher branched on), or a command's
    subject from the protocol (``p.MSG_SEND``)."""
    if isinstance(node, ast.Name):
        return node.id in {"verb", "command"}
    if isinstance(node, ast.Attribute):
        if node.attr == "subject":  # command.subject
            return True
        return isinstance(node.value, ast.Name) and node.attr.startswith(SUBJECT_PREFIXES)
    return False


def test_ownership_finds_no_command_again():
    tree = _tree()
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert "command_for" not in used | imported
    assert not {"COMMANDS", "Command"} & imported


def test_ownership_branches_on_no_command():
    branches = [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(_tree())
        if isinstance(node, ast.Compare)
        and any(_names_a_command(side) for side in [node.left, *node.comparators])
    ]
    assert branches == [], "identities/ branches on a command: say it in its table entry"


def test_every_command_that_touches_what_an_agent_owns_names_its_part():
    """Every command but DISCOVER (which touches nothing anyone owns) names its check; those
    that make something someone's name their record too."""
    parts = {subject: command.owned for subject, command in COMMANDS.items()}
    assert parts.pop(p.AGENT_DISCOVER) is owned.NOTHING
    assert all(part is not owned.NOTHING for part in parts.values())
    recorded = {s for s, part in parts.items() if part.record is not owned.NOTHING.record}
    # UNREGISTER records too: it gives its agent's place in its share back
    recorded_by = {p.MAILBOX_CREATE, p.MSG_SEND, p.MSG_FETCH, p.MSG_ACK, p.AGENT_REGISTER}
    assert recorded == recorded_by | {p.AGENT_UNREGISTER}
    assert [s for s, part in parts.items() if part.vouched] == [p.MSG_SEND]


async def test_each_entry_reads_the_names_its_check_asks_about():
    """What a request touches, read from its subject and body as the engine reads them."""

    async def named(subject: str, target: str, body: dict | bytes) -> owned.Named:
        raw = body if isinstance(body, bytes) else p.encode(body)
        return await COMMANDS[subject].owned.names(target, raw, 4096)

    assert (await named(p.MAILBOX_CREATE, "", {"name": "a.box"})).mailbox == "a.box"
    assert (await named(p.MAILBOX_CREATE, "", b"")).mailbox is None  # the broker names it
    assert (await named(p.MSG_SEND, "a.box", b"anything")).mailbox == "a.box"
    assert (await named(p.MSG_DELETE, "a.box.17", b"")).mailbox == "a.box"
    ack = {"group_name": "g", "mail_address": "b.box", "msg_id": 0}
    assert (await named(p.MSG_ACK, "a.box", ack)).mailbox == "b.box"  # the body's (RobustMQ)
    card = {"name": "agent.x", "payload": "y" * 10_000}  # read off the loop
    assert await named(p.AGENT_REGISTER, "", card) == owned.Named(None, "agent.x", True)
    reported = await named(p.AGENT_REPORT, "", {"name": "agent.x", "report_info": ""})
    assert reported == owned.Named(None, "agent.x", False)  # any name may be reported on
    assert (await named(p.AGENT_UNREGISTER, "", b"not json")).agent is None
