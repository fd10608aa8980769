"""The lines that add ``mq9-mcp`` to an MCP client, written in one place.

README.md and docs/mcp.md show what these functions return
(tests/integration/mcp/test_client_lines.py checks
them against a stand-in ``claude``); mq9-mcp's start banner prints :func:`terminal_help` with
the running executable's absolute path, which Claude Desktop needs.

How Claude Code (commander.js; testbed/support/claude_stub.py follows the same rules) reads
``claude mcp add [options] <name> <commandOrUrl> [args...]``:

- ``--transport``/``-t`` and ``--scope``/``-s`` take the next argument as their value.
- ``--env``/``-e`` and ``--header``/``-H`` are variadic: they take every following argument up
  to the first that starts with ``-``, so a name after ``--env K=V`` is read as one more
  variable: the name goes before ``--env``, and ``--`` ends the options (what follows is the
  server's command and its arguments).
- Options may come before or after the name; a name already registered in the same scope is
  refused, so the HTTP form gets a name of its own (:data:`HTTP_NAME`).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

NAME = "mq9"
HTTP_NAME = "mq9-http"
INSPECTOR = "@modelcontextprotocol/inspector"
TOKEN_VARIABLE = "MQ9_MCP_TOKEN"
# In a project's shared .mcp.json: relative to the project root, where Claude Code starts, so
# the file holds no path of one machine (each teammate makes .venv there).
PROJECT_COMMAND = ".venv/bin/mq9-mcp"


class Shell(str):
    """A word already in shell syntax (``"$PWD/.venv/bin/mq9-mcp"``): written as it is."""


def _line(words: Sequence[str]) -> str:
    return " ".join(str(w) if isinstance(w, Shell) else shlex.quote(w) for w in words)


def claude_code_stdio(
    command: str,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    *,
    scope: str | None = None,
) -> str:
    """``claude mcp add`` for the stdio server: options, the name, ``--env`` after the name,
    then ``--`` and the command."""
    words = ["claude", "mcp", "add", "--transport", "stdio"]
    if scope:
        words += ["--scope", scope]
    words.append(NAME)
    for key, value in (env or {}).items():
        words += ["--env", f"{key}={value}"]
    return _line([*words, "--", command, *args])


def claude_code_http(url: str) -> str:
    """``claude mcp add`` for the HTTP server, under a name of its own (the stdio one may
    already be registered as ``mq9``); the token comes from the shell's environment."""
    header = Shell(f'"Authorization: Bearer ${TOKEN_VARIABLE}"')
    words = ["claude", "mcp", "add", "--transport", "http", HTTP_NAME, url]
    return _line([*words, "--header", header])


def stdio_entry(command: str, args: Sequence[str] = ()) -> dict[str, Any]:
    """One ``mcpServers`` entry that starts the server (Claude Desktop, Cursor, .mcp.json)."""
    return {"command": command, "args": list(args)}


def http_entry(url: str) -> dict[str, Any]:
    """One ``mcpServers`` entry for a running HTTP server (Cursor)."""
    return {"url": url, "headers": {"Authorization": "Bearer <your token>"}}


def config(entry: dict[str, Any]) -> str:
    """A whole client configuration file holding ``entry`` under :data:`NAME`."""
    return json.dumps({"mcpServers": {NAME: entry}}, indent=2)


def inspector(command: str, server: str = "memory://", *, cli: bool = False) -> str:
    """The MCP Inspector on the server. Its own ``--server`` option would swallow ours, so the
    broker goes in the environment; ``-y`` lets npx install it without asking."""
    words = ["npx", "-y", INSPECTOR, *(["--cli"] if cli else []), "-e", f"MQ9_SERVER={server}"]
    return _line([*words, command])


def executable() -> str:
    """The absolute path of the running ``mq9-mcp`` (not resolving symlinks: a venv's script
    is found through its own bin directory); ``python -m mq9_mcp`` gives that Python."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "mq9-mcp":
        return os.path.abspath(argv0)
    return os.path.abspath(sys.executable)


def terminal_help(server_args: Sequence[str] = ("--server", "nats://localhost:4222")) -> str:
    """What mq9-mcp prints when started at a terminal: how to add this very executable (by its
    absolute path) to each client, with the broker arguments it was given."""
    command = executable()
    args = list(server_args)
    if Path(command).name != "mq9-mcp":
        args = ["-m", "mq9_mcp", *args]
    desktop = json.dumps({"mcpServers": {NAME: stdio_entry(command, args)}})
    return "\n".join(
        [
            "mq9-mcp speaks MCP (JSON-RPC) over stdin/stdout: an MCP client starts it and talks "
            "to it; it does not read commands typed here. Add it to a client instead:",
            f"  Claude Code:  {claude_code_stdio(command, args)}",
            "  Claude Desktop / Cursor (claude_desktop_config.json, .cursor/mcp.json):",
            f"    {desktop}",
            "  or serve HTTP:  mq9-mcp --transport http --port 8000   "
            "(then http://127.0.0.1:8000/mcp)",
            "Waiting for MCP messages on stdin; press Ctrl-C to stop.",
        ]
    )


def port_in_use(host: str, port: int) -> str | None:
    """A sentence saying what to do when ``host:port`` cannot be bound (another process holds
    it), else None. mq9-mcp --transport http asks before it starts serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if sys.platform != "win32":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return (
                f"cannot listen on {host}:{port}: {exc.strerror or exc}. Another process (an "
                f"mq9-mcp started earlier?) holds the port: stop it, or pick another port with "
                f"--port (e.g. --port {port + 1 if port < 65535 else 8000}) and use that port in "
                "the client's URL"
            )
    return None
