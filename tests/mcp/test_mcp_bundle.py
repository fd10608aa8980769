"""The MCP Bundle of mq9-mcp (``packaging/mcpb/build.py``, #37 item 6): what it holds, its
manifest checked by the official ``mcpb`` CLI from npm (skipped without npx or when the npm
registry does not answer), and its MCP registry entry (``server.json``)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "packaging" / "mcpb"))

import build  # noqa: E402

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
        "mcp_server/cli.py",
        "langchain_mq9/client/client.py",
    ):
        assert needed in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    manifest = json.loads(zipfile.ZipFile(bundle).read("manifest.json"))
    assert manifest["server"]["mcp_config"]["args"][-1] == "mq9-mcp"
    assert manifest["user_config"]["token"]["sensitive"] is True


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
