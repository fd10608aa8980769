"""This project installs beside LangChain's own MCP client (``langchain[mcp]``, on FastMCP, which
needs mcp>=2.3) and a2a-sdk 1.x, without holding langchain back: pip's resolver, run with
``--dry-run`` against what the package registry serves today, picks the same langchain for
``<this project>[a2a] "langchain[mcp]"`` (its wire, broker and platform from their folders: no
registry serves them, #92, #108) as for ``"langchain[mcp]"`` alone (issue #37).

Nothing is installed. Skipped, saying why, when the registry cannot be reached."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def resolve(tmp_path: Path, *requirements: str | Path) -> dict[str, str]:
    """What pip would install for ``requirements`` into an empty environment: name -> version."""
    report = tmp_path / f"report-{len(list(tmp_path.iterdir()))}.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--report", str(report), *map(str, requirements)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    if done.returncode != 0:
        # (a name no index serves, such as a pin of ours not given by its folder, is a
        # failure: "No matching distribution" alone says nothing of the network)
        unreachable = ("Failed to establish", "ConnectionError", "Temporary failure",
                       "Network is unreachable")  # fmt: skip
        if any(words in done.stderr for words in unreachable):
            pytest.skip(f"the package registry is unreachable: {done.stderr.strip()[-300:]}")
        pytest.fail(f"pip could not resolve {requirements}:\n{done.stderr[-3000:]}")
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}


def test_this_project_installs_beside_the_newest_langchain_mcp_client(tmp_path):
    alone = resolve(tmp_path, "langchain[mcp]")
    # ours from their folders: langchain-mq9 pins them, no registry has them (#108: the
    # platform is a distribution of its own)
    ours = (ROOT / "wire", ROOT / "broker", ROOT / "platform", f"{ROOT}[a2a]")
    together = resolve(tmp_path, *ours, "langchain[mcp]")
    assert together["langchain"] == alone["langchain"], (together["langchain"], alone["langchain"])
    assert "fastmcp" in together  # the mcp extra came along
    assert int(together["mcp"].split(".")[0]) >= 2
    assert together["a2a-sdk"].startswith("1.")
    assert together["mq9-wire"] == together["mq9-broker"] == together["langchain-mq9"]
