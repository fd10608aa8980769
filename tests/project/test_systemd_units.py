"""packaging/systemd/ (#91 item 7): a unit for each server, each restarted on failure, started
once ready, run hardened; ``systemd-analyze verify`` finds nothing to say of any (where it
runs: the programs' paths put to this environment's), and each ``ExecStart`` names a console
script of this package (or nats-server) with options its ``--help`` lists."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "packaging" / "systemd"
BIN = Path(sys.executable).parent
# the unit of each server, and the command line its ExecStart runs (the script and, for the
# console, its subcommand)
SERVERS = {
    "nats-server@.service": ["nats-server"],
    "mq9-dev-broker.service": ["mq9-dev-broker"],
    "mq9-wake.service": ["mq9-wake"],
    "mq9-a2a-gateway.service": ["mq9-a2a-gateway"],
    "mq9-mcp.service": ["mq9-mcp"],
    "mq9-console.service": ["mq9", "console"],
}
HARDENED = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
    "SystemCallFilter": "@system-service",
}  # fmt: skip


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def _help(argv: list[str]) -> str:
    found = subprocess.run(
        [str(BIN / argv[0]), *argv[1:], "--help"], capture_output=True, text=True, timeout=120
    )
    assert found.returncode == 0, found.stderr
    return found.stdout


def test_a_unit_for_every_server_and_nothing_else():
    assert sorted(path.name for path in UNITS.glob("*.service")) == sorted(SERVERS)


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_each_unit_restarts_waits_for_readiness_and_is_hardened(name):
    service = _unit(name)["Service"]
    assert service["Restart"] == "on-failure"
    for key, value in HARDENED.items():
        assert service[key] == value, (name, key)
    assert service.get("DynamicUser") == "yes" or service.get("User"), name
    if name.startswith("mq9"):  # READY=1 once /readyz answers 200 (metrics/notify.py)
        assert service["Type"] == "notify" and "--metrics" in service["ExecStart"]
    else:  # nats-server: started once its /healthz answers
        assert "/healthz" in service["ExecStartPost"]


@pytest.mark.slow  # over a second on a quiet machine (#89)
@pytest.mark.parametrize("name", sorted(SERVERS))
def test_each_exec_start_is_a_real_program_with_real_options(name):
    words = shlex.split(_unit(name)["Service"]["ExecStart"])
    argv = SERVERS[name]
    assert Path(words[0]).name == argv[0], words
    if argv[0] == "nats-server":
        assert words[1:] == ["-c", "/etc/nats/%i.conf"]
        return
    # each command is its distribution's: mq9-dev-broker mq9-broker's (broker/)
    scripts = "".join((ROOT / f / "pyproject.toml").read_text() for f in (".", "broker"))
    assert re.search(rf'^{re.escape(argv[0])} = "', scripts, re.M), argv[0]
    for subcommand in argv[1:]:
        assert subcommand in words, words
    listed = _help(argv) + (_help(argv[:1]) if len(argv) > 1 else "")
    options = [word.split("=", 1)[0] for word in words if word.startswith("--")]
    assert "--metrics" in options
    for option in options:
        assert re.search(rf"{re.escape(option)}\b", listed), (name, option)


@pytest.mark.slow  # runs systemd-analyze (a process)
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_has_nothing_to_say(tmp_path):
    nats = shutil.which("nats-server", path=str(BIN)) or shutil.which("nats-server")
    assert nats is not None
    for name in SERVERS:
        text = (UNITS / name).read_text()
        text = text.replace("/opt/mq9/bin/", f"{BIN}/").replace("/usr/local/bin/nats-server", nats)
        # a template is verified as an instance of it
        (tmp_path / name.replace("@.", "@node1.")).write_text(text)
    units = sorted(str(path) for path in tmp_path.glob("*.service"))
    found = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    said = (found.stdout + found.stderr).strip()
    assert found.returncode == 0 and not said, said
