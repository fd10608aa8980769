"""The MCP Bundle of mq9-mcp (``packaging/mcpb/build.py``, #37 item 6): what it holds, its
manifest checked by the official ``mcpb`` CLI from npm (skipped without npx or when the npm
registry does not answer), and its MCP registry entry (``server.json``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "packaging" / "mcpb"))

import build  # noqa: E402

pytestmark = pytest.mark.slow

MCPB = "@anthropic-ai/mcpb"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    assert build.main(["--out", str(out)]) == 0
    return out


def bundle_of(out: Path) -> Path:
    (bundle,) = out.glob("*.mcpb")
    return bundle


def test_the_bundle_holds_the_manifest_and_the_source_to_run(built):
    bundle = bundle_of(built)
    assert bundle.name == f"mq9-mcp-{build.project()['version']}.mcpb"
    names = zipfile.ZipFile(bundle).namelist()
    for needed in (
        "manifest.json",
        "pyproject.toml",
        "mq9_mcp/cli.py",
        "mq9_mcp/__init__.py",
        "platform/mq9_platform/client/client.py",
        "platform/pyproject.toml",  # the three distributions mq9-mcp stands on (#108), whole
        "wire/pyproject.toml",
        "wire/mq9_wire/protocol/__init__.py",
        "broker/pyproject.toml",
        "broker/mq9_broker/storage/in_process/store.py",
    ):
        assert needed in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith("langchain_mq9/")]  # no LangChain (#108)
    manifest = json.loads(zipfile.ZipFile(bundle).read("manifest.json"))
    assert manifest["server"]["mcp_config"]["args"][-1] == "mq9-mcp"
    assert manifest["user_config"]["token"]["sensitive"] is True
    project = tomllib.loads(zipfile.ZipFile(bundle).read("pyproject.toml").decode())
    ours = tomllib.loads((ROOT / "mcp_server" / "pyproject.toml").read_text())  # mq9-mcp
    # uv locks every extra before it runs a project: the bundle's has none, and no dev tooling
    assert "optional-dependencies" not in project["project"]
    assert set(project.get("tool", {})) == {"hatch", "uv"}
    # mq9-platform, mq9-wire and mq9-broker, on no package registry, from their folders in it
    sources = project["tool"]["uv"]["sources"]
    assert sources == {
        "mq9-platform": {"path": "platform"},
        "mq9-wire": {"path": "wire"},
        "mq9-broker": {"path": "broker"},
    }
    for name, source in sources.items():
        inside = zipfile.ZipFile(bundle).read(f"{source['path']}/pyproject.toml").decode()
        assert tomllib.loads(inside)["project"]["name"] == name
    # mq9-mcp's, with mq9-wire and mq9-broker named too (uv takes a source for a direct
    # dependency), pinned as mq9-platform pins them
    platform = tomllib.loads((ROOT / "platform" / "pyproject.toml").read_text())
    pins = [d for d in platform["project"]["dependencies"] if d.startswith(("mq9-wire", "mq9-b"))]
    assert project["project"]["dependencies"] == pins + ours["project"]["dependencies"]
    assert project["project"]["name"] == "mq9-mcp"
    assert project["project"]["scripts"]["mq9-mcp"] == ours["project"]["scripts"]["mq9-mcp"]
    python = manifest["compatibility"]["runtimes"]["python"]
    assert python == ours["project"]["requires-python"]


def test_the_registry_entry_names_the_bundle_and_its_digest(built):
    entry = json.loads((built / "server.json").read_text())
    (package,) = entry["packages"]
    bundle = bundle_of(built)
    assert package["registryType"] == "mcpb"
    assert package["identifier"].endswith(f"/releases/download/v{entry['version']}/{bundle.name}")
    assert package["fileSha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert entry["name"] == "io.github.mq9-agents/langchain-mq9"


def npx(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["npx", "-y", MCPB, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_the_official_mcpb_cli_accepts_the_bundle(built, tmp_path):
    if shutil.which("npx") is None:
        pytest.skip("npx (Node.js) is not installed")
    try:
        subprocess.run(["npm", "view", MCPB, "version"], capture_output=True, timeout=30,
                       check=True)  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"the npm registry does not answer: {exc}")
    with zipfile.ZipFile(bundle_of(built)) as archive:
        archive.extract("manifest.json", tmp_path)
    checked = npx("validate", str(tmp_path / "manifest.json"), cwd=tmp_path)
    assert checked.returncode == 0 and "validation passes" in checked.stdout, checked
    info = npx("info", str(bundle_of(built)), cwd=tmp_path)
    assert info.returncode == 0 and "mq9-mcp" in info.stdout, info


def _as_the_host_fills_in(value: str, bundle_dir: Path, manifest: dict) -> str:
    """``value`` with the placeholders the host (Claude Desktop) fills in: the bundle's
    directory, and each user setting at its default (a token left empty: none)."""
    value = value.replace("${__dirname}", str(bundle_dir))
    for key, setting in manifest["user_config"].items():
        value = value.replace(f"${{user_config.{key}}}", str(setting.get("default", "")))
    return value


def test_the_bundle_starts_under_uv_as_the_host_runs_it(built, tmp_path):
    """The manifest's command (``uv run --directory <bundle> mq9-mcp``) in the unpacked bundle,
    with the environment it names: uv installs the bundle's project (its dependencies from the
    package registry, the first time) and mq9-mcp answers an MCP client. The default broker is
    a real one; memory:// stands in for it here."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (pip install uv)")
    bundle_dir = tmp_path / "bundle"
    with zipfile.ZipFile(bundle_of(built)) as archive:
        archive.extractall(bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    config = manifest["server"]["mcp_config"]
    assert config["command"] == "uv"
    args = [_as_the_host_fills_in(arg, bundle_dir, manifest) for arg in config["args"]]
    env = {k: _as_the_host_fills_in(v, bundle_dir, manifest) for k, v in config["env"].items()}
    env = {**os.environ, **env, "MQ9_SERVER": "memory://", "UV_PYTHON": sys.executable}
    env["UV_PYTHON_DOWNLOADS"] = "never"  # this Python, never one fetched
    # the first start installs the dependencies; a registry out of reach is a skip, not a failure
    synced = subprocess.run(
        [uv, "sync", "--directory", str(bundle_dir)], env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    if synced.returncode != 0 and "Failed to fetch" in synced.stderr:
        pytest.skip(f"uv cannot reach the package registry: {synced.stderr[-300:]}")
    assert synced.returncode == 0, synced.stderr[-2000:]

    asyncio.run(_lists_the_tools(StdioServerParameters(command=uv, args=args, env=env)))


async def _lists_the_tools(server: StdioServerParameters) -> None:
    async with Client(server, mode="legacy", read_timeout_seconds=120) as client:
        listed = [tool.name for tool in (await client.list_tools()).tools]
        assert listed == [n for n, op in OPERATIONS.items() if op.allowed(ToolPolicy())]
        created = await client.call_tool("create_mailbox", {"name": "bundle.inbox"})
        assert not created.is_error, created.content
