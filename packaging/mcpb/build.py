"""Build ``dist/mq9-mcp-<version>.mcpb``: mq9-mcp as an MCP Bundle, Claude Desktop's one-click
install (an archive of ``manifest.json`` and mq9-mcp's source), and ``dist/server.json``, its
entry for the MCP registry (the bundle as a release asset of the repository, with its SHA-256,
as the registry requires for a bundle).

    python packaging/mcpb/build.py [--out DIR]

The bundle is of the ``uv`` type (MCPB manifest 0.4): the host runs ``uv run`` in the unpacked
bundle, which installs mq9-mcp (``mcp_server``) from the bundle's own ``pyproject.toml``, and the
three distributions it stands on (``mq9-platform``, ``mq9-wire``, ``mq9-broker``) from
their folders in the bundle: no LangChain. The user gives the broker URL (and a NATS token, kept
secret) in the host's settings. The official ``mcpb`` CLI checks the manifest
(tests/mcp/test_mcp_bundle.py runs ``npx -y @anthropic-ai/mcpb validate`` on it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# mq9-mcp's distribution: its pyproject.toml is the bundle's (written by bundle_pyproject),
# its two files at the bundle's top
FACE = ROOT / "mcp_server"
# The repository's three other distributions that mq9-mcp stands on and no package registry
# serves, in the bundle whole: uv finds them by its [tool.uv.sources].
BELOW = {"mq9-platform": "platform", "mq9-wire": "wire", "mq9-broker": "broker"}
# What the bundle holds, as (where in the repository, where in the bundle)
SOURCES = (
    ("LICENSE", "LICENSE"),
    ("mcp_server/mq9_mcp", "mq9_mcp"),
    ("mcp_server/mcp_server", "mcp_server"),
    ("mcp_server/README.md", "README.md"),
    *((f"{folder}/pyproject.toml", f"{folder}/pyproject.toml") for folder in BELOW.values()),
    # (each pyproject.toml names its README, which its build reads)
    *((f"{folder}/README.md", f"{folder}/README.md") for folder in BELOW.values()),
    ("platform/mq9_platform", "platform/mq9_platform"),
    ("wire/mq9_wire", "wire/mq9_wire"),
    ("broker/mq9_broker", "broker/mq9_broker"),
)
SKIPPED = re.compile(r"(^|/)(__pycache__|\.pytest_cache)(/|$)|\.py[co]$")
# The tables of pyproject.toml the bundle keeps: how to build and run the package. uv locks every
# optional dependency of a project before it runs it, so the extras (the semantic model, the
# bench, the dev tools) would have the host resolve and fetch the metadata of packages mq9-mcp
# never imports, and fail offline.
BUNDLE_TABLES = (
    "build-system",
    "project",
    "project.urls",
    "project.scripts",
    "tool.hatch.build.targets.wheel",
)


def project() -> dict[str, str]:
    """The version, repository and Python that mq9-mcp's pyproject.toml declares."""
    text = (FACE / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', text, re.M).group(1)
    repository = re.search(r'^Repository = "([^"]+)"', text, re.M).group(1)
    python = re.search(r'^requires-python = "([^"]+)"', text, re.M).group(1)
    return {"version": version, "repository": repository, "python": python}


def bundle_pyproject() -> str:
    """mq9-mcp's pyproject.toml with only the ``BUNDLE_TABLES``, and mq9-wire and mq9-broker
    among its dependencies too, pinned as mq9-platform pins them: a source uv takes from
    [tool.uv.sources] is a direct dependency's, and it then serves that name everywhere in the
    resolution (mq9-platform's own requirements of the two included)."""
    text = (FACE / "pyproject.toml").read_text()
    platform = tomllib.loads((ROOT / "platform" / "pyproject.toml").read_text())
    pins = [
        need
        for need in platform["project"]["dependencies"]
        if re.split(r"[\s\[=<>!~;@]", need, maxsplit=1)[0] in BELOW
    ]
    lines = "".join(f"    {json.dumps(r)},  # for [tool.uv.sources]\n" for r in pins)
    text = re.sub(r"^dependencies = \[\n", lambda head: head[0] + lines, text, count=1, flags=re.M)
    tables = re.split(r"^(?=\[)", text, flags=re.M)  # each from its [header] to the next

    def name(table: str) -> str | None:
        header = re.match(r"\[([\w.-]+)\]\n", table)
        return header.group(1) if header else None

    kept = "".join(t for t in tables if name(t) in BUNDLE_TABLES).rstrip()
    sources = "".join(f'{dist} = {{ path = "{folder}" }}\n' for dist, folder in BELOW.items())
    return f"{kept}\n\n[tool.uv.sources]\n{sources}"


def manifest() -> dict:
    sys.path[:0] = [str(ROOT / folder) for folder in BELOW.values()]  # mq9_platform, from the tree
    from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy

    about = project()
    tools = [
        {"name": name, "description": op.title}
        for name, op in OPERATIONS.items()
        if op.allowed(ToolPolicy())
    ]
    return {
        "manifest_version": "0.4",
        "name": "mq9-mcp",
        "display_name": "mq9 mailboxes and agent registry",
        "version": about["version"],
        "description": "Persistent mailboxes and an agent registry for AI agents, over mq9 "
        "(RobustMQ's agent messaging on NATS).",
        "author": {"name": "mq9-agents", "url": about["repository"]},
        "repository": {"type": "git", "url": about["repository"]},
        "homepage": about["repository"],
        "documentation": f"{about['repository']}/blob/main/docs/mcp.md",
        "license": "Apache-2.0",
        "keywords": ["mq9", "mailbox", "agents", "nats", "a2a"],
        "server": {
            "type": "uv",
            "entry_point": "mq9_mcp/__main__.py",
            "mcp_config": {
                "command": "uv",
                "args": ["run", "--directory", "${__dirname}", "mq9-mcp"],
                "env": {"MQ9_SERVER": "${user_config.server}", "MQ9_TOKEN": "${user_config.token}"},
            },
        },
        "tools": tools,
        "prompts": [
            {
                "name": "handle_inbox",
                "description": "Check a mailbox and handle what is waiting in it",
                "arguments": ["mail_address"],
                "text": "Check my inbox, the mq9 mailbox ${arguments.mail_address}, and handle "
                "what is waiting.",
            }
        ],
        "compatibility": {
            "platforms": ["darwin", "linux", "win32"],
            "runtimes": {"python": about["python"]},
        },
        "user_config": {
            "server": {
                "type": "string",
                "title": "mq9 broker",
                "description": "The broker's URL: nats://host:4222 (RobustMQ, or mq9-dev-broker), "
                "or memory:// for one private to this server",
                "default": "nats://localhost:4222",
                "required": True,
            },
            "token": {
                "type": "string",
                "title": "NATS token",
                "description": "The broker's authentication token, if it needs one",
                "sensitive": True,
                "required": False,
                "default": "",
            },
        },
    }


def files() -> list[tuple[Path, str]]:
    """Each file the bundle holds, with its name in the bundle."""
    found = []
    for name, inside in SOURCES:
        path = ROOT / name
        if path.is_file():
            found.append((path, inside))
        elif path.is_dir():
            found += [
                (p, f"{inside}/{p.relative_to(path).as_posix()}")
                for p in sorted(path.rglob("*"))
                if p.is_file()
            ]
    return [(p, inside) for p, inside in found if not SKIPPED.search(inside)]


def build(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    data = manifest()
    bundle = out / f"mq9-mcp-{data['version']}.mcpb"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(data, indent=2) + "\n")
        archive.writestr("pyproject.toml", bundle_pyproject())
        for path, inside in files():
            archive.write(path, inside)
    return bundle


REGISTRY_SCHEMA = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"


def server_json(bundle: Path) -> dict:
    """The MCP registry's entry for ``bundle``, once it is attached to the release tagged
    v<version>."""
    about = project()
    owner_repo = about["repository"].removeprefix("https://github.com/")
    asset = f"{about['repository']}/releases/download/v{about['version']}/{bundle.name}"
    return {
        "$schema": REGISTRY_SCHEMA,
        "name": f"io.github.{owner_repo}",
        "title": "mq9 mailboxes and agent registry",
        "description": "Persistent mailboxes and an agent registry for AI agents over mq9.",
        "version": about["version"],
        "repository": {"url": about["repository"], "source": "github"},
        "websiteUrl": f"{about['repository']}/blob/main/docs/mcp.md",
        "packages": [
            {
                "registryType": "mcpb",
                "identifier": asset,
                "version": about["version"],
                "fileSha256": hashlib.sha256(bundle.read_bytes()).hexdigest(),
                "transport": {"type": "stdio"},
            }
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where (default: dist/)")
    out = parser.parse_args(argv).out
    bundle = build(out)
    (out / "server.json").write_text(json.dumps(server_json(bundle), indent=2) + "\n")
    print(bundle)
    print(out / "server.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
