"""Rooms meet at public seams (issue #74): no module reads another room's ``_private``
attribute. A room is a package folder of docs/architecture.md: a folder of the platform
(``platform/mq9_platform/client``, ...; its top files one room), of the wire, or of the bundled
broker (``broker/engine``, ...; ``storage/jetstream`` is the storage's), ``langchain_mq9`` (its
top files are the LangChain face), ``mq9_mcp`` and ``mq9_cli`` (each with its
subfolders). A part that needs something of another room asks for it by a public name, with a
docstring saying why; what is private may change with its room alone.

Read from the source (``ast``), every module of the packages: an access ``x._name``
(also ``getattr``/``hasattr``/``setattr(x, "_name")``) on an ``x`` that is not ``self``,
``cls``, ``super()``, ``type(self)`` or a name the module itself defines at its top counts as
a reach-in unless ``_name`` is defined by the module itself, or only by modules of its own room
(a method, a class attribute, ``self._name = ...``, a top-level name). Names are not types: a
module whose own class has a private of the same name as the one it reaches for hides that
reach-in from this test (reviewers read those).

Dependencies' privates (nats-py, httpx, the MCP SDK, the standard library) are out of this
rule's scope but not out of sight: each reach-in is listed in ``KNOWN`` (file, attribute, why),
so a new one fails here until it is added with its reason, and an entry no longer used fails
too (the list stays true).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "wire/mq9_wire",
    "broker/mq9_broker",
    "platform/mq9_platform",
    "langchain_mq9",
    "mcp_server/mq9_mcp",
    "faces/cli/mq9_cli",
)
ACCESSORS = ("getattr", "hasattr", "setattr", "delattr")

_NATS = "nats-py keeps no public name for it; read behind the guard's version check"
_NATS_INFO = "nats-py's INFO: no public reader; the floor's server_info() is the one read"
_FAST_PATH = (
    "the broker's own fast path on nats-py's internals, checked at start (else the public API)"
)

# (file, attribute) -> why: the reach-ins into dependencies that this project knows about.
KNOWN: dict[tuple[str, str], str] = {
    # nats-py, guarded (nats_floor/guard.py checks the version and each name before use)
    ("wire/mq9_wire/nats_floor/guard.py", "_ps"): _NATS + " (the protocol parser)",
    ("wire/mq9_wire/nats_floor/guard.py", "_reading_task"): _NATS + " (its read loop)",
    ("wire/mq9_wire/nats_floor/guard.py", "_resp_sub_prefix"): _NATS + " (the reply inbox)",
    ("wire/mq9_wire/nats_floor/guard.py", "_subs"): _NATS + " (its subscriptions)",
    ("wire/mq9_wire/nats_floor/guard.py", "_process_ping"): _NATS + " (the parser's callback)",
    ("wire/mq9_wire/nats_floor/guard.py", "_process_pong"): _NATS + " (the parser's callback)",
    ("wire/mq9_wire/nats_floor/guard.py", "_process_msg"): _NATS + " (the parser's callback)",
    ("wire/mq9_wire/nats_floor/guard.py", "_process_err"): _NATS + " (the parser's callback)",
    ("wire/mq9_wire/nats_floor/guard.py", "_process_info"): _NATS + " (the parser's callback)",
    ("wire/mq9_wire/nats_floor/guard.py", "_io_writer"): _NATS
    + " (the socket a stuck close drops)",
    # drain_in_order: nats-py's Subscription.drain, its round trip after its UNSUB
    ("wire/mq9_wire/nats_floor/guard.py", "_send_unsubscribe"): _NATS + " (drain's UNSUB)",
    ("wire/mq9_wire/nats_floor/guard.py", "_remove_sub"): _NATS + " (drain's end)",
    ("wire/mq9_wire/nats_floor/guard.py", "_pending_queue"): _NATS + " (a callback's backlog)",
    ("wire/mq9_wire/nats_floor/guard.py", "_stop_processing"): _NATS + " (drain's end)",
    ("wire/mq9_wire/nats_floor/guard.py", "_id"): _NATS + " (a subscription's sid)",
    ("wire/mq9_wire/nats_floor/guard.py", "_closed"): _NATS + " (a subscription ended)",
    ("wire/mq9_wire/nats_floor/info.py", "_server_info"): _NATS_INFO,
    ("wire/mq9_wire/nats_floor/fast_path.py", "_subs"): _FAST_PATH,
    ("wire/mq9_wire/nats_floor/fast_path.py", "_ps"): _FAST_PATH,
    ("wire/mq9_wire/nats_floor/fast_path.py", "_cb"): _FAST_PATH,
    ("wire/mq9_wire/nats_floor/fast_path.py", "_id"): _FAST_PATH,
    ("wire/mq9_wire/nats_floor/fast_path.py", "_transport"): _FAST_PATH,
    ("wire/mq9_wire/nats_floor/fast_path.py", "_pending"): _FAST_PATH,
    ("wire/mq9_wire/nats_floor/fast_path.py", "_pending_data_size"): _FAST_PATH,
    ("wire/mq9_wire/nats_floor/fast_path.py", "_max_pending_size"): _FAST_PATH,
    ("wire/mq9_wire/nats_floor/fast_path.py", "_build_message"): _FAST_PATH,
    ("wire/mq9_wire/nats_floor/fast_path.py", "_process_headers"): _FAST_PATH,
    ("wire/mq9_wire/nats_floor/fast_path.py", "_request_sub_callback"): _FAST_PATH,
    # httpx
    ("platform/mq9_platform/_http/ssrf.py", "_pool"): (
        "httpx's connection pool under the pinned transport: the only way to hand httpcore "
        "the checked address (httpx names no public hook)"
    ),
    # the MCP SDK
    ("mcp_server/mq9_mcp/http/sessions.py", "_server_instances"): (
        "the MCP SDK's session manager keeps each HTTP session's transport under this name "
        "only: closing an idle session needs it"
    ),
    ("mcp_server/mq9_mcp/watch.py", "_connection"): (
        "the MCP SDK's Context does not build ``connection`` yet: the request's session "
        "holds it (read only when ``ctx.connection`` is missing)"
    ),
    # the standard library
    ("broker/mq9_broker/cli/dev_broker.py", "_ArgumentGroup"): (
        "the type add_argument_group returns: argparse names no public one"
    ),
    ("wire/mq9_wire/nats_floor/server_process.py", "_exit"): (
        "os._exit, documented: a forked child leaves without running the parent's cleanup"
    ),
}


def test_nats_py_privates_are_read_only_on_the_nats_floor():
    """#74: every nats-py private name the project reads is under wire/mq9_wire/nats_floor/, behind
    its version checks; the client and the broker use that floor's public names."""
    reasons = (_NATS, _NATS_INFO, _FAST_PATH)
    elsewhere = [f"{f}: {name}" for (f, name), why in KNOWN.items() if why.startswith(reasons)]
    elsewhere = [e for e in elsewhere if not e.startswith("wire/mq9_wire/nats_floor/")]
    assert elsewhere == []


def room(path: Path) -> str:
    parts = path.relative_to(ROOT).parts[:-1]
    if parts[:2] in (("broker", "mq9_broker"), ("wire", "mq9_wire"), ("platform", "mq9_platform")):
        return "/".join(parts[:3])  # a folder of the broker's, the wire's or the platform's
    if parts[0] == "langchain_mq9":
        return "/".join(parts[:2])
    return "/".join(parts[:3])  # mcp_server/mq9_mcp, faces/cli/mq9_cli: each one room


def _files() -> list[Path]:
    missing = [package for package in PACKAGES if not (ROOT / package).is_dir()]
    assert not missing, f"no package at {missing}: where did it move?"
    return [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _top_names(tree: ast.Module) -> set[str]:
    """The names a module defines at its top (imports excluded: an imported module's private
    is its room's)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _defined(tree: ast.Module) -> set[str]:
    """Every private name a module defines: at its top, in a class body, as ``self._x``."""
    names = {n for n in _top_names(tree) if _private(n)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(item.name)
                elif isinstance(item, ast.Assign):
                    names |= {t.id for t in item.targets if isinstance(t, ast.Name)}
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            names.add(node.attr)
    return {n for n in names if _private(n)}


@cache
def _trees() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text("utf-8")) for path in _files()}


def _owner_is_here(target: ast.expr, own: set[str]) -> bool:
    """``self._x``, ``cls._x``, ``super()._x``, ``type(self)._x``, ``Own._x``."""
    if isinstance(target, ast.Name):
        return target.id in ("self", "cls") or target.id in own
    if isinstance(target, ast.Call) and isinstance(target.func, ast.Name):
        return target.func.id == "super" or (
            target.func.id == "type"
            and len(target.args) == 1
            and isinstance(target.args[0], ast.Name)
            and target.args[0].id == "self"
        )
    return (  # self.__class__._x
        isinstance(target, ast.Attribute)
        and target.attr == "__class__"
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    )


def _accesses(tree: ast.Module) -> list[tuple[ast.expr, str, int]]:
    """(whose, private name, line) for each private attribute the module reads or writes."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            found.append((node.value, node.attr, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ACCESSORS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            found.append((node.args[0], node.args[1].value, node.lineno))
    return found


def reach_ins() -> dict[tuple[str, str], list[int]]:
    """(file, attribute) -> lines, for each private of another room (or a dependency's)."""
    trees = _trees()
    rooms_defining: dict[str, set[str]] = defaultdict(set)
    defined_here = {path: _defined(tree) for path, tree in trees.items()}
    for path, names in defined_here.items():
        for name in names:
            rooms_defining[name].add(room(path))
    found: dict[tuple[str, str], list[int]] = defaultdict(list)
    for path, tree in trees.items():
        own, here = _top_names(tree), room(path)
        for whose, name, line in _accesses(tree):
            if _owner_is_here(whose, own) or name in defined_here[path]:
                continue
            if rooms_defining.get(name) == {here}:
                continue
            found[(str(path.relative_to(ROOT)), name)].append(line)
    return dict(found)


@pytest.mark.slow  # over a second on a quiet machine
def test_no_module_reads_another_rooms_private_attribute():
    unknown = {
        f"{file}:{lines[0]}: .{name}": lines
        for (file, name), lines in reach_ins().items()
        if (file, name) not in KNOWN
    }
    assert unknown == {}, (
        "a module reaches into another room's (or a dependency's) private attribute: give "
        "the room a public name for it (a dependency's: list it in KNOWN, saying why)"
    )


@pytest.mark.slow  # parses the package: about 2 s of CPU
def test_every_known_reach_in_is_still_there():
    assert sorted(set(KNOWN) - set(reach_ins())) == []


def test_the_check_sees_a_reach_in():
    """The rule itself, on a room-less snippet: another object's private is seen, by attribute
    and by getattr; self's, super()'s, and a name the module defines are not."""
    tree = ast.parse(
        "class A:\n"
        "    def f(self, other):\n"
        "        self._mine = 1\n"
        "        super()._base()\n"
        "        other._theirs()\n"
        "        return getattr(other, '_hidden', None), A._table\n"
    )
    own = _top_names(tree)
    seen = [name for whose, name, _ in _accesses(tree) if not _owner_is_here(whose, own)]
    assert sorted(seen) == ["_hidden", "_theirs"]


if __name__ == "__main__":
    for (file, name), lines in sorted(reach_ins().items()):
        print(f"{file}:{','.join(map(str, lines))} .{name}", "(known)" * ((file, name) in KNOWN))
