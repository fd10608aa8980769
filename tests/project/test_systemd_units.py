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

from tests.mcp.metrics.walk_through import environment_files, named_variables, walk_through

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
# where each unit expects its programs: the broker's a venv of mq9-broker alone (no LangChain,
# docs/deploy.md#the-broker-alone), the others a venv of the platform and its faces (no
# LangChain either); and the folders of the distributions (their pyproject.toml) it holds
VENVS = {
    "/opt/mq9-broker/bin/": ("broker",),
    "/opt/mq9/bin/": ("platform", "mcp_server", "faces/cli"),
    "/usr/local/bin/": (),
}
BROKER_UNIT = "mq9-dev-broker.service"
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


def _venv(program: str) -> str:
    (found,) = [venv for venv in VENVS if program == venv + Path(program).name]
    return found


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


@pytest.mark.slow  # over a second on a quiet machine
@pytest.mark.parametrize("name", sorted(SERVERS))
def test_each_exec_start_is_a_real_program_with_real_options(name):
    words = shlex.split(_unit(name)["Service"]["ExecStart"])
    argv = SERVERS[name]
    assert Path(words[0]).name == argv[0], words
    if argv[0] == "nats-server":
        assert words[1:] == ["-c", "/etc/nats/%i.conf"]
        return
    # each command is the distribution's that its venv holds: mq9-dev-broker mq9-broker's
    scripts = "".join((ROOT / d / "pyproject.toml").read_text() for d in VENVS[_venv(words[0])])
    assert re.search(rf'^{re.escape(argv[0])} = "', scripts, re.M), (name, words[0])
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
        for venv in VENVS:
            text = text.replace(venv, f"{BIN}/")
        text = text.replace(f"{BIN}/nats-server", nats)
        # a template is verified as an instance of it
        (tmp_path / name.replace("@.", "@node1.")).write_text(text)
    units = sorted(str(path) for path in tmp_path.glob("*.service"))
    found = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    said = (found.stdout + found.stderr).strip()
    assert found.returncode == 0 and not said, said


def _broker_alone_block() -> str:
    """docs/deploy.md's commands that install the broker alone (its first bash block after
    the heading)."""
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    section = deploy.split("\n## The broker alone\n", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_broker_unit_runs_from_the_broker_alone(tmp_path):
    """The broker's unit expects the venv docs/deploy.md makes of mq9-broker alone: its
    commands run (a temporary directory for /opt/mq9-broker, this Python for python3, from the
    repository as a clone), then that venv holds no LangChain and its mq9-dev-broker takes every
    option of the unit's ExecStart."""
    words = shlex.split(_unit(BROKER_UNIT)["Service"]["ExecStart"])
    venv = _venv(words[0])
    assert VENVS[venv] == ("broker",) and venv.rstrip("/").endswith("/bin")
    home = venv.removesuffix("/bin/")
    block = _broker_alone_block()
    assert home in block  # the page installs where the unit looks
    script = block.replace(home, str(tmp_path / "broker")).replace("python3 ", f"{sys.executable} ")
    done = subprocess.run(["bash", "-euc", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    if done.returncode != 0 and "No matching distribution" in done.stderr:
        pytest.skip(f"the package registry is unreachable: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    python = tmp_path / "broker" / "bin" / "python"
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True,
                            text=True, timeout=120, check=True).stdout.lower()  # fmt: skip
    names = {line.split("==")[0].replace("_", "-") for line in listed.split()}
    assert {"mq9-wire", "mq9-broker", "nats-py", "nkeys", "prometheus-client"} <= names, names
    assert not names & {"langchain", "langchain-core", "langgraph", "pydantic", "langchain-mq9"}
    helped = subprocess.run([tmp_path / "broker" / "bin" / "mq9-dev-broker", "--help"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    for option in (word.split("=", 1)[0] for word in words if word.startswith("--")):
        assert re.search(rf"{re.escape(option)}\b", helped.stdout), option


def test_each_variable_a_unit_names_is_written_by_the_walk_through():
    """(#107) docs/deploy.md's walk-through writes every environment file a unit reads, each
    variable the unit names in it (a unit naming MQ9_BROKER_PASSWORD in broker.env that
    nothing writes fails here), and installs
    every unit (the waker, the gateway and mq9-mcp in its optional block)."""
    done = walk_through()
    assert done.installed | done.optional == set(SERVERS), (done.installed, done.optional)
    for name in SERVERS:
        files = environment_files(name)
        assert files, name
        written: dict[str, set[str]] = {}
        for path in files:
            assert path in done.written, f"the walk-through writes no {path} ({name})"
            for variable in done.written[path]:
                written.setdefault(variable, set()).add(path)
        for variable in named_variables(name):
            # a template's files are one a node: each node's must hold what it names there
            holders = written.get(variable, set())
            assert holders, f"{name} names {variable}, which the walk-through never writes"
            if any(node in "".join(holders) for node in ("node1", "node2", "node3")):
                assert len(holders) == 3, (name, variable, holders)


def test_the_console_keeps_its_token_across_restarts():
    """(#107) console.env, as the walk-through writes it, gives the console a token made once
    (the variable its --token reads), so a restart keeps it (without it, each start would make a new
    random one)."""
    from mq9_cli.app import console

    [token] = [param for param in console.params if param.name == "console_token"]
    assert token.envvar == "MQ9_CONSOLE_TOKEN"
    written = walk_through().written["/etc/mq9/console.env"]
    assert written["MQ9_CONSOLE_TOKEN"].startswith("$(openssl rand"), written
    assert "MQ9_CONSOLE_TOKEN" in named_variables("mq9-console.service")


@pytest.mark.slow  # runs git check-ignore (a process)
def test_what_the_walk_through_writes_into_a_clone_is_ignored_by_git():
    """(#107) the files docs/deploy.md has an operator write in the clone's directory (the
    node files, their stores, the credentials, the state exported, the partitions' mapping)
    are ignored by git: a ``git add .`` commits no password."""
    pages = ("deploy.md", "deploy-systemd.md")
    deploy = "".join((ROOT / "docs" / page).read_text() for page in pages)
    files = set(re.findall(r"<!-- deploy-file: (\S+) -->", deploy))
    deploy = "".join(re.findall(r"^```\w*\n(.*?)^```", deploy, re.S | re.M))  # what is typed
    assert {"node1.conf", "accounts.conf"} <= files
    stores = set(re.findall(r'store_dir: "\./(\w+)"', deploy))
    making = r"(?:--out|--tokens-file|credentials setup|state export) (?:\./)?([\w.-]+)"
    made = set(re.findall(making, deploy))
    made |= set(re.findall(r"(?<![>&-])> (?:\./)?([\w.-]+)", deploy))  # not "->"
    written = files | {f"{s}/x" for s in stores} | {m.rstrip(")") for m in made}
    written = {w if "/" in w or "." in w else f"{w}/x" for w in written if w[0] != "/"}
    assert {"node1/x", "mq9-auth/x", "support.credential", "accounts.new", "mq9-state/x",
            "tokens.json", "mq9-partitions.conf"} <= written  # fmt: skip
    found = subprocess.run(["git", "check-ignore", "--no-index", *sorted(written)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    ignored = set(found.stdout.split())
    assert ignored == written, f"not ignored: {sorted(written - ignored)}"
