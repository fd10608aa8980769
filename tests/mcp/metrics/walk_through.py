"""docs/deploy-systemd.md's walk-through under systemd ("The cluster under systemd, top to bottom",
#99, #107) as an operator reads it: the units each block installs (a block whose note says
``optional`` installs servers run only by those who want them), the environment files it
writes and the variables written into each, and the ports the installed units expose to
Prometheus. What the shipped units and prometheus.yml are held to
(tests/project/test_systemd_units.py,
tests/integration/metrics/test_shipped_prometheus_files.py)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "docs" / "deploy-systemd.md"
UNITS = ROOT / "packaging" / "systemd"
HEADING = "**The cluster under systemd, top to bottom**"
BLOCK = re.compile(r"(?:<!--\s*(?P<note>[^>]*?)\s*-->\n)?```bash\n(?P<code>.*?)^```", re.S | re.M)
INSTALLED = re.compile(r"\bpackaging/systemd/(\S+\.service)\b")
WRITTEN = re.compile(r">\s*(/etc/\S+\.env)\b")
VARIABLE = re.compile(r"(?:^|\s|\()([\"']?)([A-Z][A-Z0-9_]*)=")
# the Prometheus job of each server's program (packaging/prometheus/prometheus.yml)
JOBS = {
    "mq9-dev-broker": "mq9-broker", "mq9": "mq9-console", "mq9-wake": "mq9-wake",
    "mq9-a2a-gateway": "mq9-gateway", "mq9-mcp": "mq9-mcp",
}  # fmt: skip
NODES = ("node1", "node2", "node3")


@dataclass
class WalkThrough:
    """What the walk-through's blocks do: the units installed (``optional``: each once its
    server runs), and each environment file written with the variables given a value there
    (the value as typed)."""

    installed: set[str] = field(default_factory=set)
    optional: set[str] = field(default_factory=set)
    written: dict[str, dict[str, str]] = field(default_factory=dict)


def walk_through() -> WalkThrough:
    text = DEPLOY.read_text()
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    found = WalkThrough()
    for block in BLOCK.finditer(section):
        optional = "optional" in (block.group("note") or "")
        units = set(INSTALLED.findall(block.group("code")))
        (found.optional if optional else found.installed).update(units)
        for command in block.group("code").replace("\\\n", " ").splitlines():
            for path in WRITTEN.findall(command):
                values = found.written.setdefault(path, {})
                for quote, name in VARIABLE.findall(command):
                    typed = command.split(f"{name}=", 1)[1]  # to its quote's end, or a space
                    values[name] = typed.split(quote or None, 1)[0] if typed else ""

    return found


def service(name: str) -> dict[str, list[str]]:
    """A shipped unit's [Service] settings (a key may repeat: EnvironmentFile), and its
    comments under ``#``."""
    found: dict[str, list[str]] = {}
    section = None
    for line in (UNITS / name).read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and line.startswith("#"):
            found.setdefault("#", []).append(line)
        elif section == "Service" and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def environment_files(name: str) -> list[str]:
    """The files a unit reads its environment from (a template's, for each node)."""
    files = service(name).get("EnvironmentFile", [])
    return [f.replace("%i", node) for f in files for node in NODES] if "@" in name else files


def named_variables(name: str) -> set[str]:
    """Every environment variable a unit names: in its commands (``${X}``, ``$X``) and in
    the comments that say what its environment files hold."""
    settings = service(name)
    commands = " ".join(v for k in ("ExecStart", "ExecStartPost") for v in settings.get(k, []))
    named = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)\}?", commands))
    comments = " ".join(settings.get("#", []))
    return named | set(re.findall(r"\b((?:MQ9|NATS)_[A-Z0-9_]+)\b", comments))


def metrics_port(name: str) -> tuple[str, int]:
    """The Prometheus job of a unit's server and the ``--metrics`` port its ExecStart gives."""
    words = shlex.split(service(name)["ExecStart"][0])
    return JOBS[Path(words[0]).name], int(words[words.index("--metrics") + 1])
