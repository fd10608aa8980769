"""A stand-in for Claude Code's ``claude mcp add``, reading its arguments by the rules Claude
Code's CLI follows (commander.js; mq9_mcp/client_lines.py says them):

- ``-t/--transport`` and ``-s/--scope`` take the next argument (``--opt=value`` too);
- ``-e/--env`` and ``-H/--header`` are variadic: the next argument, then each following one
  up to the first starting with ``-``; ``--`` ends the options;
- options may come before or after the operands ``<name> <commandOrUrl> [args...]``;
- an ``--env`` value must be ``KEY=value`` (Claude Code refuses others: a name swallowed by
  ``--env`` fails here as it fails there); a name taken in the scope is refused.

Scopes: ``project`` writes ``.mcp.json`` in the working directory, ``local`` (the default) the
working directory's entry of ``$HOME/.claude.json``, ``user`` its top-level ``mcpServers``.

    python claude_stub.py mcp add --transport stdio mq9 -- .venv/bin/mq9-mcp
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SINGLE = {"-t": "transport", "--transport": "transport", "-s": "scope", "--scope": "scope"}
VARIADIC = {"-e": "env", "--env": "env", "-H": "header", "--header": "header"}


class Refused(Exception):
    pass


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    options: dict = {"transport": "stdio", "scope": "local", "env": [], "header": []}
    operands: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            operands += argv[i:]
            break
        flag, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if flag in SINGLE:
            if eq:
                options[SINGLE[flag]] = inline
            elif i < len(argv):
                options[SINGLE[flag]] = argv[i]
                i += 1
            else:
                raise Refused(f"option '{flag}' argument missing")
        elif flag in VARIADIC:
            values = [inline] if eq else []
            if not eq:
                if i >= len(argv):
                    raise Refused(f"option '{flag}' argument missing")
                values.append(argv[i])
                i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            options[VARIADIC[flag]] += values
        elif arg.startswith("-") and len(arg) > 1:
            raise Refused(f"unknown option '{arg}'")
        else:
            operands.append(arg)
    return options, operands


def entry(options: dict, operands: list[str]) -> tuple[str, dict]:
    if len(operands) < 2:
        raise Refused("missing required argument 'name' or 'commandOrUrl'")
    name, target, *args = operands
    env = {}
    for item in options["env"]:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise Refused(
                f"Invalid environment variable format: {item}, environment variables should "
                "be added as: -e KEY1=value1 -e KEY2=value2"
            )
        env[key] = value
    if options["transport"] == "stdio":
        if options["header"]:
            raise Refused("--header is for http and sse servers")
        return name, {"type": "stdio", "command": target, "args": args, "env": env}
    if options["transport"] not in ("http", "sse"):
        raise Refused(f"Invalid transport type: {options['transport']}")
    headers = {}
    for item in options["header"]:
        key, colon, value = item.partition(":")
        if not colon or not key.strip():
            raise Refused(f"Invalid header format: {item}")
        headers[key.strip()] = value.strip()
    if args:
        raise Refused(f"unexpected arguments after the URL: {args}")
    return name, {"type": options["transport"], "url": target, "headers": headers}


def register(scope: str, name: str, server: dict) -> Path:
    if scope == "project":
        path = Path.cwd() / ".mcp.json"
    elif scope in ("local", "user"):
        path = Path(os.environ["HOME"]) / ".claude.json"
    else:
        raise Refused(f"Invalid scope: {scope}")
    data = json.loads(path.read_text()) if path.exists() else {}
    holder = data
    if scope == "local":
        holder = data.setdefault("projects", {}).setdefault(str(Path.cwd()), {})
    servers = holder.setdefault("mcpServers", {})
    if name in servers:
        raise Refused(f"MCP server {name} already exists in {scope} config")
    servers[name] = server
    path.write_text(json.dumps(data, indent=2))
    return path


def main(argv: list[str]) -> int:
    if argv[:2] != ["mcp", "add"]:
        print(f"claude stub: only 'mcp add' is known, not {argv[:2]}", file=sys.stderr)
        return 2
    try:
        options, operands = parse(argv[2:])
        name, server = entry(options, operands)
        path = register(options["scope"], name, server)
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Added {server['type']} MCP server {name} to {options['scope']} config ({path})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
