"""#99 item 2: the shipped units start the cluster docs/deploy.md describes, as an operator types
it. The walk-through (deploy-systemd.md's "The cluster under systemd, top to bottom") runs as
written into a directory standing for ``/`` (absolute paths put under it; ``systemd-sysusers`` and
``systemd-tmpfiles`` given ``--root``; the ``systemctl`` lines are what this test does): the
``nats`` user and the directories are made, the node files and environment files land where
the unit reads them. Every unit is verified as shipped there (``systemd-analyze verify
--root``: each program at the path its unit names). Then the three nodes start as
``nats-server@.service`` starts them (its ``ExecStart``, its ``EnvironmentFile``s, its
``WorkingDirectory``), one after another, each ready on its own (its ``ExecStartPost``, run
as written) before the next starts: a first node once waited for a quorum that needs the
others, and failed (#99). The cluster forms, its state where the unit's working directory puts
``store_dir: "./node1"``.

Not done here: ``User=nats`` (the host has no such user: the processes run as the test's), the
hardening (no systemd manager runs in a container; ``systemd-analyze verify`` reads it)."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from testbed.ports import unclaimed_port
from testbed.support.waiting import until_sync

pytestmark = pytest.mark.slow  # runs systemd's tools and three nats-servers

REPO = Path(__file__).resolve().parents[4]
DEPLOY = REPO / "docs" / "deploy.md"  # the node files; the walk-through is deploy-systemd.md
WALKED = REPO / "docs" / "deploy-systemd.md"
UNITS = REPO / "packaging" / "systemd"
BIN = Path(sys.executable).parent
NATS_UNIT = "nats-server@.service"
NODES = ("node1", "node2", "node3")
PORTS = ("4222", "4223", "4224", "6222", "6223", "6224", "8222", "8223", "8224")
WALKTHROUGH = "tests/integration/broker/cli/test_units.py runs it"
FILE_BLOCK = re.compile(
    r"<!-- deploy-file: (?P<name>\S+) -->\n```\w*\n(?P<body>.*?)^```", re.S | re.M
)
# the absolute places the walk-through and the units name, put under the test's root
ABSOLUTE = re.compile(r"(?<![\w./$])/(etc|usr/local/bin|var/lib|opt)/")
WAIT = 120  # seconds: a hang guard, never a timing assertion


def _need(*programs: str) -> None:
    for program in programs:
        if shutil.which(program) is None:
            pytest.skip(f"needs {program} (systemd's tools: apt-get install systemd)")


def _documented() -> tuple[dict[str, str], list[str]]:
    """deploy.md's node files and the walk-through's lines, each documented port a free one."""
    free = {port: str(unclaimed_port()) for port in PORTS}
    documented = DEPLOY.read_text() + WALKED.read_text()
    text = re.sub(r"\b(" + "|".join(PORTS) + r")\b", lambda m: free[m.group(1)], documented)
    files = {m.group("name"): m.group("body") for m in FILE_BLOCK.finditer(text)}
    assert set(files) == {"node1.conf", "node2.conf", "node3.conf", "accounts.conf"}, files
    at = text.index(WALKTHROUGH)
    block = text[at:].split("```bash\n", 1)[1].split("```", 1)[0]
    return files, block.strip().splitlines()


def _rooted(text: str, root: Path) -> str:
    return ABSOLUTE.sub(lambda m: f"{root}/{m.group(1)}/", text)


def _service(name: str) -> dict[str, list[str]]:
    """The [Service] section of a shipped unit, each key's values in order (a key may repeat:
    EnvironmentFile)."""
    found: dict[str, list[str]] = {}
    section = None
    for line in (UNITS / name).read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def _walk(root: Path, clone: Path, files: dict[str, str], lines: list[str], env: dict) -> None:
    """The walk-through, typed line by line as an operator types it (as root), under ``root``."""
    for name, body in files.items():
        (clone / name).write_text(body)
    (clone / ".venv" / "bin").mkdir(parents=True)
    nats = shutil.which("nats-server", path=str(BIN)) or shutil.which("nats-server")
    assert nats is not None
    (clone / ".venv" / "bin" / "nats-server").symlink_to(nats)
    (clone / "packaging").symlink_to(REPO / "packaging")
    for folder in ("usr/local/bin", "etc/systemd/system"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    done = []
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("systemctl "):  # what this test does: the nodes started below
            done.append(line)
            continue
        typed = _rooted(line, root)
        typed = re.sub(r"^(systemd-sysusers|systemd-tmpfiles) ", rf"\1 --root={root} ", typed)
        # the host has no nats group (sysusers made it in the root's /etc/group): ours
        typed = typed.replace("-g nats ", f"-g {os.getgid()} ")
        ran = subprocess.run(["bash", "-euc", typed], cwd=clone, env=env, capture_output=True,
                             text=True, timeout=WAIT)  # fmt: skip
        assert ran.returncode == 0, (line, typed, ran.stdout, ran.stderr)
    assert done == [
        "systemctl daemon-reload",
        *(f"systemctl enable --now nats-server@{node}" for node in NODES),
    ], done


def _environment(root: Path, service: dict[str, list[str]], node: str) -> dict[str, str]:
    """What systemd gives the unit: its EnvironmentFile lines (KEY=VALUE), nothing else of
    ours but a PATH."""
    env = {"PATH": "/usr/bin:/bin"}
    for named in service["EnvironmentFile"]:
        path = Path(_rooted(named.lstrip("-").replace("%i", node), root))
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, value = line.split("=", 1)
                env[key.strip()] = value.strip().strip('"')
    return env


def _healthz(monitor: str, query: str = "") -> int:
    try:
        with urllib.request.urlopen(f"{monitor}/healthz{query}", timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as refused:
        return refused.code
    except OSError:
        return 0


def _verify_as_shipped(root: Path) -> str:
    """Every unit, unchanged, verified in ``root``: systemd's own units there, and each
    program its unit names at that path (a copy; nats-server is the walk-through's)."""
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    if not (root / "bin").exists():
        (root / "bin").symlink_to("usr/bin")
    units = []
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text()
        for line in text.splitlines():
            if line.split("=", 1)[0] in ("ExecStart", "ExecStartPost", "ExecReload"):
                program = shlex.split(line.split("=", 1)[1])[0]
                placed = root / program.lstrip("/")
                if not placed.exists():
                    placed.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(BIN / Path(program).name if (BIN / Path(program).name).exists()
                                else shutil.which(Path(program).name), placed)  # fmt: skip
        name = unit.name.replace("@.", "@node1.")  # a template is verified as an instance
        shutil.copy(unit, root / "etc/systemd/system" / name)
        units.append(f"etc/systemd/system/{name}")
    found = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", *units],
                           capture_output=True, text=True, timeout=WAIT, cwd=root)  # fmt: skip
    said = (found.stdout + found.stderr).strip()
    assert found.returncode == 0 and not said, said
    return said


def test_the_walkthrough_makes_the_user_and_the_units_start_three_nodes_one_by_one(tmp_path):
    _need("systemd-sysusers", "systemd-tmpfiles", "systemd-analyze", "curl")
    root, clone = tmp_path / "root", tmp_path / "clone"
    root.mkdir()
    clone.mkdir()
    files, lines = _documented()
    env = {**os.environ, "MQ9_BROKER_PASSWORD": f"mq9-{secrets.token_hex(24)}"}
    _walk(root, clone, files, lines, env)

    # the user and the directories the units need, made by the shipped sysusers/tmpfiles pair
    passwd = (root / "etc/passwd").read_text()
    [user] = [line for line in passwd.splitlines() if line.startswith("nats:")]
    assert user.split(":")[5:] == ["/var/lib/nats", "/usr/sbin/nologin"], user
    for folder, mode in (("etc/nats", 0o750), ("etc/mq9", 0o755), ("var/lib/nats", 0o750)):
        assert stat.S_IMODE((root / folder).stat().st_mode) == mode, folder
    assert stat.S_IMODE((root / "etc/mq9/nats.env").stat().st_mode) == 0o600

    _verify_as_shipped(root)

    service = _service(NATS_UNIT)
    [start], [ready], [workdir] = service["ExecStart"], service["ExecStartPost"], service[
        "WorkingDirectory"]  # fmt: skip
    started: list[subprocess.Popen[bytes]] = []
    try:
        for node in NODES:
            node_env = _environment(root, service, node)
            argv = shlex.split(_rooted(start.replace("%i", node), root))
            with open(tmp_path / f"{node}.log", "wb") as log:
                started.append(subprocess.Popen(argv, env=node_env, cwd=_rooted(workdir, root),
                                                stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
            # systemd runs ExecStartPost, the unit started once it succeeds: as written
            post = shlex.split(ready.replace("${NATS_MONITOR}", node_env["NATS_MONITOR"]))
            answered = subprocess.run(post, capture_output=True, text=True, timeout=WAIT * 2)
            log_text = (tmp_path / f"{node}.log").read_text()
            assert answered.returncode == 0, (node, answered.stderr, log_text)
            if node == "node1":  # alone, it is ready, though the cluster has no quorum yet
                assert _healthz(node_env["NATS_MONITOR"]) == 503
        monitors = [_environment(root, service, node)["NATS_MONITOR"] for node in NODES]
        until_sync(lambda: all(_healthz(m) == 200 for m in monitors), timeout=WAIT,
                   what="every node's full /healthz 200: the cluster formed", every=0.5,
                   show=lambda: [_healthz(m) for m in monitors])  # fmt: skip
        # the node files' store_dir "./node1" is under the unit's working directory
        for node in NODES:
            assert (root / "var/lib/nats" / node / "jetstream").is_dir(), node
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)
