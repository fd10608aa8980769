"""One table entry a command (#92): each mq9 command's subject, body limit, body reader,
ownership (``owned.*``) and handler stand together in ``engine.COMMANDS``, as the MCP SDK's
request handler entries hold a handler with its params type; ``Engine.handle`` answers through
that table alone, and nothing else in the engine maps a subject to a handler.

Read from the code (``ast``, type hints), as the rule is about how it is written; the answers
themselves are the conformance suites' (tests/broker/engine/test_conformance_*.py).
"""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

from mq9_broker import BrokerEngine
from mq9_broker.engine import counting, owned, rules
from mq9_broker.engine.engine import COMMANDS, UNKNOWN, command_for
from mq9_wire import protocol as p
from mq9_wire.protocol.subjects import MSG_COUNT

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "broker" / "mq9_broker" / "engine" / "engine.py"
# The protocol's names of the commands' subjects (p.MSG_SEND, p.AGENT_REGISTER, ...)
SUBJECT_PREFIXES = ("MSG_", "MAILBOX_", "AGENT_")
EVERY_SUBJECT = {
    p.MAILBOX_CREATE,
    p.MSG_SEND,
    p.MSG_FETCH,
    p.MSG_ACK,
    p.MSG_QUERY,
    p.MSG_DELETE,
    p.AGENT_REGISTER,
    p.AGENT_UNREGISTER,
    p.AGENT_REPORT,
    p.AGENT_DISCOVER,
    MSG_COUNT,  # its entry is engine/counting.py's, until engine.py's table has it
}


def _names_a_subject(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "p"
        and node.attr.startswith(SUBJECT_PREFIXES)
    )


def test_every_command_has_one_entry_holding_all_its_parts():
    assert set(COMMANDS) == EVERY_SUBJECT
    for subject, command in COMMANDS.items():
        assert command.subject == subject
        assert inspect.iscoroutinefunction(command.handler), subject
        assert command.handler.__qualname__.startswith("Engine.") or command is counting.COUNT
        assert callable(command.read) and callable(command.body_limit), subject
        assert isinstance(command.owned, owned.Owned), subject
    # each handler is one command's: no two entries share one
    assert len({command.handler for command in COMMANDS.values()}) == len(COMMANDS)


def test_each_handler_takes_what_its_entry_reads():
    """As an MCP handler takes its params type: the handler's request parameter is typed as
    what its entry's reader returns (a body its handler reads itself: ``bytes``)."""
    for subject, command in [*COMMANDS.items(), ("(unknown)", UNKNOWN)]:
        handler = typing.get_type_hints(command.handler)
        request = list(inspect.signature(command.handler).parameters)[-1]
        read = typing.get_type_hints(command.read)["return"]
        assert handler[request] == read, subject


def test_the_engine_maps_no_subject_to_a_handler_but_in_its_table():
    """No second subject-to-handler table (the engine's ``_handlers`` was one): in engine.py
    no dict is keyed by a command's subject and no branch compares one, but the table's; and
    ``handle`` finds a request's command only through the table's lookup."""
    tree = ast.parse(ENGINE.read_text(encoding="utf-8"), filename=str(ENGINE))
    outside = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "_ENTRIES":
            continue  # the table's entries, each naming its subject
        for n in ast.walk(node):
            sides = n.keys if isinstance(n, ast.Dict) else []
            if isinstance(n, ast.Compare):
                sides = [n.left, *n.comparators]
            outside += [f"line {n.lineno}: {ast.unparse(n)}" for s in sides if _names_a_subject(s)]
    assert outside == [], "a command's subject mapped or compared outside its table entry"
    # nor a handler picked by anything but its entry (a dict of the engine's own methods)
    methods = {n.name for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef)}
    picked = [
        f"line {v.lineno}: {ast.unparse(v)}"
        for d in ast.walk(tree)
        if isinstance(d, ast.Dict)
        for v in d.values
        if isinstance(v, ast.Attribute) and v.attr in methods
    ]
    assert picked == []
    assert not hasattr(BrokerEngine(), "_handlers")


def test_a_subject_finds_its_entry_or_unknown():
    assert command_for(p.MSG_SEND + "a.box") == (COMMANDS[p.MSG_SEND], "a.box")
    assert command_for(p.MSG_DELETE + "a.box.7") == (COMMANDS[p.MSG_DELETE], "a.box.7")
    assert command_for(p.AGENT_DISCOVER) == (COMMANDS[p.AGENT_DISCOVER], "")
    assert command_for("$mq9.AI.NOPE") == (UNKNOWN, "$mq9.AI.NOPE")
    assert UNKNOWN.owned is owned.NOTHING and UNKNOWN.read is rules.as_is
