"""A slow test is marked slow in its own file, and only there (issue #74).

``pytest -m "not slow"`` is the unit suite. A test is slow when it runs or waits on another
process (a nats-server, the dev broker, the MCP server, a notebook kernel, an example, node),
serves or floods a network server in process, loads a model, or waits out real timeouts. Its
file says so, in one of three places a reader of the test sees:

- a whole file: ``pytestmark = pytest.mark.slow`` at its top;
- one test: ``@pytest.mark.slow`` over it (or over its class);
- one lane of a parametrized test or fixture (a real nats-server's, RobustMQ's):
  ``pytest.param("nats", marks=pytest.mark.slow)`` where the lanes are listed.

No conftest.py keeps a list of files or tests to mark, nor marks anything in a hook: such a list
was a second way that drifted from the files (a file renamed or moved joins the fast run
unnoticed, and a reader of the test cannot tell). What this test holds, read from the source
(no collection, so it runs in the unit suite itself):

- no conftest.py adds the mark in code or names a test file;
- a test that uses a fixture starting a nats-server (``SERVER_FIXTURES``), directly or through
  other fixtures, autouse ones included, is marked;
- a lane on a server (``"nats"``, ``"robustmq"``) in a fixture's ``params`` or a
  ``parametrize`` is marked, unless the file or the test already is;
- a test that starts a process (``PROCESS_STARTERS``: a nats-server, a cluster, the dev broker,
  mq9-mcp, a subprocess), in its body, through a function of its file or through a fixture
  that does, is marked (the quick lane's tests each take under a second; a test that
  waits on another process is the kind that does not, and this is how it is seen without
  timing anything).

Each failure is one line naming the file, the test and where to put the mark.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

# It parses every test file and conftest.py: about 2 s on a quiet machine, over the quick lane's
# second a test
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
# The suite's plugin and the brokers' fixtures the tests folders import
PLUGIN = ROOT / "testbed" / "pytest_plugin.py"
FIXTURE_MODULES = (PLUGIN, ROOT / "testbed" / "brokers.py")
SLOW = "pytest.mark.slow"
# The fixtures that start a nats-server (or need one started): a test using any of them waits
# on another process, so it is slow. Where each is defined is checked below, so a renamed one
# fails here instead of letting its users join the fast run.
SERVER_FIXTURES = frozenset(
    {
        "nats_server",  # testbed/pytest_plugin.py: the session's nats-server
        "nats_broker",  # testbed/brokers.py: the bundled broker on it
        "restartable_nats",  # testbed/pytest_plugin.py: a nats-server the test stops and starts
        "jetstream_broker",  # testbed/brokers.py: the bundled broker on the JetStream store
        "shared_jetstream",  # testbed/pytest_plugin.py: the session's JetStream nats-server
        "shared_jetstream_cluster",  # testbed/pytest_plugin.py: the session's 3 clustered ones
        "bare_nats",  # tests/platform/client/test_client_errors.py: a nats-server without a broker
        "guarded_nats",  # tests/platform/client/test_client_auth.py: a nats-server requiring logins
        # tests/integration/langchain/test_toolkit.py: one whose connections are counted
        "monitored_nats",
    }
)
# The values a lane on a real server goes by: the ``broker`` fixture's and its likes'.
LANES = frozenset({"nats", "robustmq"})


def _test_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if ".venv" not in p.parts)


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return ast.unparse(target) in ("pytest.fixture", "pytest_asyncio.fixture")


def _fixture_name(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    for decorator in function.decorator_list:
        if _is_fixture(decorator) and isinstance(decorator, ast.Call):
            for keyword in decorator.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    return keyword.value.value
    return function.name


def _is_autouse(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(
        isinstance(d, ast.Call)
        and _is_fixture(d)
        and any(k.arg == "autouse" and ast.unparse(k.value) == "True" for k in d.keywords)
        for d in function.decorator_list
    )


def _arguments(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """What a test or fixture asks for: its parameters and its ``usefixtures`` marks."""
    args = function.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    for decorator in function.decorator_list:
        if isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith(
            "mark.usefixtures"
        ):
            names += [a.value for a in decorator.args if isinstance(a, ast.Constant)]
    return [name for name in names if name != "self"]


@cache
def _fixtures(path: Path) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """The fixtures a file defines at its top level, by the name tests ask for."""
    return {
        _fixture_name(node): node
        for node in _tree(path).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(_is_fixture(d) for d in node.decorator_list)
    }


def _imported_fixture_modules(conftest: Path) -> list[Path]:
    """The modules a conftest.py takes its fixtures from (``from testbed.brokers import
    broker``): their fixtures are the conftest's."""
    found = []
    for node in _tree(conftest).body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            source = ROOT.joinpath(*node.module.split(".")).with_suffix(".py")
            if node.module.startswith(("testbed.", "tests.")) and source.is_file():
                found.append(source)
    return found


def _levels(path: Path) -> list[Path]:
    """Where a test file's fixtures come from, nearest first: the file, then each conftest.py
    from its folder up to tests/ (pytest's own order of look-up) with the modules each imports
    its fixtures from, then the suite's plugin (tests/conftest.py names it)."""
    levels = [path]
    folder = path.parent
    while True:
        if (folder / "conftest.py").is_file() and folder / "conftest.py" != path:
            levels.append(folder / "conftest.py")
            levels += _imported_fixture_modules(folder / "conftest.py")
        if folder == TESTS:
            return [*levels, PLUGIN]
        folder = folder.parent


def _closure(path: Path, asked: list[str]) -> set[str]:
    """Every fixture name a test reaches, as pytest resolves them: a fixture overriding one of
    the same name further out (``def client(client)``) reaches the outer one."""
    levels = _levels(path)
    reached: set[str] = set()
    todo = [(name, 0) for name in asked]
    for level, source in enumerate(levels):
        todo += [(name, level) for name, f in _fixtures(source).items() if _is_autouse(f)]
    seen: set[tuple[str, int]] = set()
    while todo:
        name, start = todo.pop()
        if (name, start) in seen:
            continue
        seen.add((name, start))
        reached.add(name)
        for level in range(start, len(levels)):
            fixture = _fixtures(levels[level]).get(name)
            if fixture is not None:
                inner = level + 1 if name in _arguments(fixture) else level
                todo += [(a, level if a != name else inner) for a in _arguments(fixture)]
                break
    return reached


def _marks_slow(node: ast.expr) -> bool:
    """``pytest.mark.slow``, alone or in a list of marks."""
    if isinstance(node, ast.List | ast.Tuple):
        return any(_marks_slow(element) for element in node.elts)
    return ast.unparse(node) == SLOW


def _body_marked(body: list[ast.stmt]) -> bool:
    """A module or class body that sets ``pytestmark`` to the slow mark."""
    return any(
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
        and _marks_slow(node.value)
        for node in body
    )


def _decorated_slow(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> bool:
    return any(_marks_slow(d) for d in node.decorator_list)


def _tests(path: Path):
    """(name, function, marked) of each test in a file, methods of ``Test`` classes too."""
    tree = _tree(path)
    whole = _body_marked(tree.body)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            yield node.name, node, whole or _decorated_slow(node)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            marked = whole or _decorated_slow(node) or _body_marked(node.body)
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and (
                    item.name.startswith("test")
                ):
                    yield f"{node.name}::{item.name}", item, marked or _decorated_slow(item)


def _test_modules() -> list[Path]:
    return [p for p in _test_files() if p.name.startswith("test_")]


def _conftests() -> list[Path]:
    return [p for p in _test_files() if p.name == "conftest.py"]


def test_no_conftest_marks_a_test_slow_or_names_a_test_file():
    found = []
    for path in _conftests():
        where = path.relative_to(ROOT)
        for node in ast.walk(_tree(path)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("add_marker", "applymarker")
                and any(SLOW in ast.unparse(a) for a in node.args)
            ):
                found.append(f"{where}:{node.lineno}: marks tests slow; mark them in their files")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith("test_")
                and (node.value.endswith(".py") or ".py::" in node.value)
            ):
                found.append(f"{where}:{node.lineno}: names {node.value!r}; mark it in its file")
    assert not found, "\n".join(found)


def test_every_server_fixture_is_defined_where_it_is_said_to_be():
    sources = [*_test_files(), *FIXTURE_MODULES]
    defined = {name for path in sources for name in _fixtures(path)}
    assert defined >= SERVER_FIXTURES, f"no fixture named {sorted(SERVER_FIXTURES - defined)}"


def test_a_test_using_a_fixture_that_starts_a_nats_server_is_marked_slow():
    unmarked = []
    for path in _test_modules():
        for name, function, marked in _tests(path):
            servers = SERVER_FIXTURES & _closure(path, _arguments(function))
            if servers and not marked:
                unmarked.append(
                    f"{path.relative_to(ROOT)}::{name} uses {', '.join(sorted(servers))} "
                    f"(a nats-server): put @pytest.mark.slow over it"
                )
    assert not unmarked, "\n".join(unmarked)


def _module_values(tree: ast.Module) -> dict[str, ast.expr]:
    return {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def _bare_lanes(node: ast.expr, values: dict[str, ast.expr], seen: frozenset = frozenset()):
    """The server lanes in a list of params that no ``pytest.param(..., marks=slow)`` wraps,
    following names of the module's own lists (``params=LANES``)."""
    if (
        isinstance(node, ast.Call)
        and ast.unparse(node.func) == "pytest.param"
        and any(k.arg == "marks" and _marks_slow(k.value) for k in node.keywords)
    ):
        return
    if isinstance(node, ast.Constant) and node.value in LANES:
        yield node.value
    elif isinstance(node, ast.Name) and node.id in values and node.id not in seen:
        yield from _bare_lanes(values[node.id], values, seen | {node.id})
    else:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                yield from _bare_lanes(child, values, seen)


def _lane_lists(function: ast.FunctionDef | ast.AsyncFunctionDef):
    """The params of a fixture's decorator and the values of each ``parametrize`` over it."""
    for decorator in function.decorator_list:
        if not isinstance(decorator, ast.Call):
            continue
        if _is_fixture(decorator):
            yield from (k.value for k in decorator.keywords if k.arg == "params")
        elif ast.unparse(decorator.func).endswith("mark.parametrize"):
            if len(decorator.args) > 1:
                yield decorator.args[1]
            yield from (k.value for k in decorator.keywords if k.arg == "argvalues")


def test_a_lane_on_a_real_server_is_marked_slow():
    unmarked = []
    for path in _test_files():
        tree = _tree(path)
        if _body_marked(tree.body):
            continue
        values = _module_values(tree)
        marked_tests = {id(function) for _, function, marked in _tests(path) if marked}
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if id(node) in marked_tests:
                continue
            for lanes in _lane_lists(node):
                for lane in sorted(set(_bare_lanes(lanes, values))):
                    unmarked.append(
                        f"{path.relative_to(ROOT)}::{node.name} has a {lane!r} lane: list it as "
                        f'pytest.param("{lane}", marks=pytest.mark.slow)'
                    )
    assert not unmarked, "\n".join(unmarked)


def test_the_quick_lanes_reading_of_a_whole_file_mark_is_this_ones():
    """tests/conftest.py leaves out of ``-m "not slow"`` the files whose ``pytestmark`` is slow,
    without importing them (testbed/support/slow_files.py reads the mark alone): it must name
    the files this test's full reading names, no more (a quick test lost) and no fewer."""
    from testbed.support.slow_files import file_marked_slow

    differ = [
        f"{path.relative_to(ROOT)}: the file's mark read as {file_marked_slow(path)}, "
        f"here as {_body_marked(_tree(path).body)}"
        for path in _test_modules()
        if file_marked_slow(path) != _body_marked(_tree(path).body)
    ]
    assert not differ, "\n".join(differ)


# What starts another process when called, as a test file calls it: a test (or a fixture, or a
# function of its file) calling one of these waits on a process
PROCESS_STARTERS = frozenset(
    {
        "start_nats_server",  # testbed/: a nats-server
        "JetStreamCluster",  # testbed/: JetStream nats-servers
        "JetStreamServer",
        "DevBroker",  # testbed/: mq9-dev-broker
        "http_server",  # testbed/support/mcp_support.py: mq9-mcp over HTTP
        "asyncio.create_subprocess_exec",
        "asyncio.create_subprocess_shell",
        "subprocess.run",
        "subprocess.Popen",
        "subprocess.check_output",
        "subprocess.check_call",
    }
)


def _called(node: ast.AST) -> set[str]:
    return {ast.unparse(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}


@cache
def _starters(path: Path) -> frozenset[str]:
    """``PROCESS_STARTERS`` and the file's own top-level functions calling one, transitively."""
    functions = {
        n.name: n
        for n in _tree(path).body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    known = set(PROCESS_STARTERS)
    grown = True
    while grown:
        grown = False
        for name, function in functions.items():
            if name not in known and _called(function) & known:
                known.add(name)
                grown = True
    return frozenset(known)


def _starting_fixtures(path: Path) -> set[str]:
    """The fixtures a test file reaches (its own, its conftests') that start a process."""
    return {
        name
        for level in _levels(path)
        for name, fixture in _fixtures(level).items()
        if _called(fixture) & _starters(level)
    }


def test_a_test_that_starts_a_process_is_marked_slow():
    unmarked = []
    for path in _test_modules():
        fixtures = _starting_fixtures(path)
        for name, function, marked in _tests(path):
            if marked:
                continue
            started = sorted(_called(function) & _starters(path))
            started += sorted(fixtures & _closure(path, _arguments(function)))
            if started:
                unmarked.append(
                    f"{path.relative_to(ROOT)}::{name} starts a process ({', '.join(started)}): "
                    f"put @pytest.mark.slow over it"
                )
    assert not unmarked, "\n".join(unmarked)
