"""The README and docs/ as a new user meets them: every ```python and ```bash block runs as
pasted, in a project directory whose ``.venv`` is a fresh virtualenv made by the README's own
wheel-install command from a wheel built once from this tree (not the clone, not its venv).

A block says how it runs in an HTML comment right before it:

- none: it runs on the base install (so the README's claim "base install" is checked: blocks
  that need more run only after every base block, and say what they need);
- ``<!-- needs: PKG ... -->``: those packages are installed into the venv first (``[EXTRA]``:
  an extra of this project, the wheel's);
- ``<!-- runs-until: TEXT -->``: a server; it is started, must print TEXT, and must stop
  cleanly on SIGTERM (``<!-- needs: ...; runs-until: TEXT -->``: both);
- ``<!-- not-runnable: reason -->``: not run (needs Docker, Node.js, the network), with why.

Ports 4222 and 8000 in a command are replaced by free ones (other processes on a shared
machine may hold them), and ``mq9-dev-broker`` gets ``--port``. ``claude`` is the stand-in of
testbed/support/claude_stub.py (what the registered server does is
tests/integration/mcp/test_client_lines.py's
part).
Python blocks that talk to ``mq9-mcp --transport http`` get that server, started from the venv,
and run twice (the second run finds what the first left on it).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from testbed.ports import unclaimed_port
from testbed.support.devbroker_helpers import port_open
from testbed.support.processes import end_process
from testbed.support.waiting import until_sync
from tests.project.test_install_lines import brought

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples/README.md"]
STUB = Path(__file__).resolve().parents[2] / "testbed" / "support" / "claude_stub.py"
TIMEOUT = 120

# The variables a snippet or the server reads; a developer's own settings must not leak in.
_OWN_ENV = (
    "MQ9_SERVER", "NATS_URL", "MQ9_USER", "NATS_USER", "MQ9_PASSWORD", "NATS_PASSWORD",
    "MQ9_TOKEN", "NATS_TOKEN", "MQ9_CREDS", "NATS_CREDS", "MQ9_MCP_TOKEN", "MQ9_CREDENTIAL",
    "MQ9_CREDENTIAL_FILE", "MQ9_MCP_PORT", "MQ9_MCP_STATE_KEYS",
    "VIRTUAL_ENV", "PYTHONPATH",
)  # fmt: skip

BLOCK = re.compile(
    r"(?:<!--\s*(?P<note>[^>]*?)\s*-->\n)?```(?P<lang>python|bash)\n(?P<code>.*?)^```", re.S | re.M
)


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    note: str

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def needs(self) -> list[str]:
        return self._says("needs:").split()

    @property
    def runs_until(self) -> str | None:
        return self._says("runs-until:").strip() if self.is_("runs-until") else None

    def is_(self, kind: str) -> bool:
        return any(part.strip().startswith(kind) for part in self.note.split(";"))

    def _says(self, kind: str) -> str:
        """What the note's ``kind`` part says ("" without one)."""
        parts = (part.strip() for part in self.note.split(";"))
        return next((part.removeprefix(kind) for part in parts if part.startswith(kind)), "")


def blocks() -> list[Block]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for m in BLOCK.finditer(text):
            note = m.group("note") or ""
            line = text.count("\n", 0, m.start("code"))
            found.append(Block(doc, line, m.group("lang"), m.group("code"), note))
    return found


BLOCKS = blocks()
# The README's first section: .ci/run and tests/project/test_readme.py run those two; the wheel
# install is what the venv fixture runs.
OWN_TESTS = ("main-command", "test-command", "wheel-install")
RUN = [b for b in BLOCKS if not b.is_("not-runnable") and not b.note.startswith(OWN_TESTS)]
# base-install blocks first: the venv only gains packages as the run goes on
RUN.sort(key=lambda b: bool(b.needs))
# pip or python by bare name reaches whatever is first on PATH (a system Python, or PyPI's
# unrelated langchain-mq9 by its name): the docs call the venv's, .venv/bin/pip
BARE_PIP = re.compile(r"(?:^|[\s;&|(])(?:pip3?|python3? -m pip|python)\s", re.M)


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in _OWN_ENV}
    return {**clean, "PYTHONUNBUFFERED": "1", **extra}


def readme_block(marker: str) -> str:
    (block,) = [b for b in BLOCKS if b.note == marker]
    return block.code.strip()


def wheel_folders() -> list[str]:
    """The folders the README's ``pip wheel`` builds: every distribution of the repository."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    (folders,) = re.findall(r"pip wheel --no-deps -w dist ([^`]+)`", readme)
    return folders.split()


def test_the_readme_builds_a_wheel_of_every_distribution():
    ours = sorted(
        "." if path.parent == ROOT else f"./{path.parent.relative_to(ROOT).as_posix()}"
        for path in [ROOT / "pyproject.toml", *ROOT.glob("*/pyproject.toml"),
                     *ROOT.glob("faces/*/pyproject.toml")]
    )  # fmt: skip
    assert sorted(wheel_folders()) == ours


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project directory with ``.venv``: the README's wheel-install command, run on the wheels
    built from this tree as the README says (an extra naming another of them, ``[mcp]``, finds
    it among those wheels: ``install``)."""
    dist = tmp_path_factory.mktemp("dist")
    # the six distributions' wheels (wire/, broker/, platform/, mcp_server/, faces/cli/, the top)
    folders = [str(ROOT / folder) for folder in wheel_folders()]
    argv = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), *folders]
    built = _run(argv, None, None, 600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = {wheel.name: wheel for wheel in dist.glob("*.whl")}
    assert len(wheels) == len(folders), sorted(wheels)
    WHEEL.append(next(w for n, w in wheels.items() if n.startswith("langchain_mq9-")))
    command = readme_block("wheel-install")
    shown = re.findall(r"\S+\.whl", command)
    # langchain-mq9's and those of the repository's distributions it stands on
    stands_on = ("langchain_mq9-", "mq9_platform-", "mq9_wire-", "mq9_broker-")
    wanted = sorted(n for n in wheels if n.startswith(stands_on))
    assert sorted(Path(s).name for s in shown) == wanted, (shown, sorted(wheels))
    for each in shown:
        command = command.replace(each, str(wheels[Path(each).name]))
    project = tmp_path_factory.mktemp("project")
    done = _run(["bash", "-c", command], project, env(), 600)
    assert done.returncode == 0, done.stderr[-3000:]
    (project / "bin").mkdir()
    claude = project / "bin" / "claude"
    claude.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STUB}" "$@"\n')
    claude.chmod(0o755)
    for name in ("pip", "pip3", "python"):  # a safety net: the system's are never reached
        shim = project / "bin" / name
        shim.write_text(
            f'#!/bin/sh\necho "{name} by bare name: use .venv/bin/{name}" >&2\nexit 99\n'
        )
        shim.chmod(0o755)
    return project


def python_of(project: Path) -> str:
    return str(project / ".venv" / "bin" / "python")


WHEEL: list[Path] = []  # the wheel the project fixture built: its extras are "[EXTRA]" needs


def install(project: Path, packages: list[str]) -> None:
    if not packages:
        return
    extras = frozenset(e for p in packages if p.startswith("[") for e in p.strip("[]").split(","))
    packages = [f"{WHEEL[0]}{p}" if p.startswith("[") else p for p in packages]
    # an extra naming another distribution of this repository (mcp: mq9-mcp): its wheel named
    # too, as the README says, so pip never looks one of ours up on an index (a
    # --find-links would let a registered name win: tests/project/test_install_sources.py)
    ours = brought({("langchain-mq9", extras)}) - {"langchain-mq9"} if extras else set()
    wheels = [str(w) for w in WHEEL[0].parent.glob("*.whl")
              if canonicalize_name(w.name.split("-")[0]) in ours]  # fmt: skip
    done = _run(
        [python_of(project), "-m", "pip", "install", "-q", *wheels, *packages], None, None, 600
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_docs_have_blocks_and_say_why_one_does_not_run():
    assert len([b for b in BLOCKS if b.lang == "python"]) >= 5
    for block in BLOCKS:
        if block.is_("not-runnable"):
            reason = block.note.removeprefix("not-runnable").lstrip(":").strip()
            assert reason, f"{block.id}: <!-- not-runnable --> needs a reason"
        else:
            known = (*OWN_TESTS, "needs:", "runs-until:")
            assert not block.note or block.note.startswith(known), f"{block.id}: {block.note}"


def test_the_readme_fits():
    # where its links lead (files and anchors, in every page): test_docs_pages.py
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300


def test_the_bench_headline_count_is_the_committed_one():
    results = (ROOT / "bench" / "RESULTS.md").read_text()
    passed, missed = re.search(r"^(\d+) passed, (\d+) missed", results, re.M).groups()
    total = int(passed) + int(missed)
    assert f"{passed} of {total} targets" in (ROOT / "docs" / "bench.md").read_text()


def _ports(code: str) -> str:
    code = code.replace("4222", str(unclaimed_port())).replace("8000", str(unclaimed_port()))
    return re.sub(r"(mq9-dev-broker)(?![^\n]*--port)", rf"\1 --port {unclaimed_port()}", code)


@pytest.mark.slow
@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in RUN])
def test_block_runs_as_pasted(block: Block, project: Path, tmp_path: Path):
    install(project, block.needs)
    if block.lang == "python":
        _run_python(block, project)
    elif block.runs_until:
        _run_server(block, project, tmp_path)
    else:
        code = re.sub(r"#.*", "", block.code)
        assert not BARE_PIP.search(code), f"{block.id}: call .venv/bin/pip, .venv/bin/python"
        path = f"{project / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        token = secrets.token_urlsafe(8)
        environment = env(PATH=path, HOME=str(tmp_path), MQ9_MCP_TOKEN=token)
        done = _run(["bash", "-euo", "pipefail", "-c", _ports(block.code)], project, environment)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}"


def _run(
    argv: list[str], cwd: Path | None, environment: dict[str, str] | None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )


def _run_python(block: Block, project: Path) -> None:
    code = block.code
    assert "await " not in re.sub(r"async def .*?\n(?=\S)", "", code, flags=re.S), (
        "top-level await: wrap the code in asyncio.run(main())"
    )
    needs_server = "MQ9_MCP_TOKEN" in code
    with _http_server(project) if needs_server else _nothing() as environment:
        for attempt in ("first", "second")[: 2 if needs_server else 1]:
            done = _run([python_of(project), "-c", code], project, environment)
            assert done.returncode == 0, f"{attempt} run:\n{done.stdout}\n{done.stderr[-3000:]}"
            assert done.stdout.strip(), f"{attempt} run printed nothing"
            assert "None" not in done.stdout.splitlines(), done.stdout
            assert "Warning" not in done.stderr, done.stderr


@contextmanager
def _nothing() -> Iterator[dict[str, str]]:
    yield env()


@contextmanager
def _http_server(project: Path) -> Iterator[dict[str, str]]:
    """The HTTP server docs/mcp-http.md tells the user to start, from the venv, on a free port and
    with a fresh token; yields the environment its snippets read."""
    command = "mq9-mcp --transport http --port 8000 --server memory://\n"
    assert command in (ROOT / "docs" / "mcp-http.md").read_text()
    token, port = secrets.token_urlsafe(16), unclaimed_port()
    argv = command.replace("8000", str(port)).split()[1:]
    process = subprocess.Popen(
        [str(project / ".venv" / "bin" / "mq9-mcp"), *argv],
        env=env(MQ9_MCP_TOKEN=token),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(process, port)
        yield env(MQ9_MCP_TOKEN=token, MQ9_MCP_PORT=str(port))
    finally:
        end_process(process)


def _wait_for_port(process: subprocess.Popen, port: int) -> None:
    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"mq9-mcp exited: {process.stderr.read()[-2000:]!r}")
        return port_open(port)

    until_sync(listening, timeout=30, what=f"mq9-mcp listening on {port}", every=0.1)


def _run_server(block: Block, project: Path, tmp_path: Path) -> None:
    """Start the block's server (stdin kept open, as a client would), wait for its line, then
    SIGTERM it: it must stop by itself, cleanly."""
    log = tmp_path / "output.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", "-c", _ports(block.code)],
            cwd=project,
            env=env(),
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def said() -> bool:
            if block.runs_until in log.read_text():
                return True
            assert process.poll() is None, f"exited {process.returncode}: {log.read_text()}"
            return False

        # generous: the suite shares two cores
        what = repr(block.runs_until)
        until_sync(said, timeout=120, what=what, every=0.1, show=lambda: log.read_text())
        os.killpg(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 60 s after SIGTERM: {log.read_text()[-3000:]}")
        assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM), log.read_text()[-3000:]
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stdin.close()


@pytest.mark.parametrize(
    "block",
    [pytest.param(b, id=b.id) for b in BLOCKS if b.lang == "python" and not b.is_("not-runnable")],
)
def test_python_block_is_ruff_clean(block: Block):
    """The blocks meet the project's own lint rules (pyproject.toml), line length included."""
    ruff = Path(sys.executable).with_name("ruff")
    command = [str(ruff)] if ruff.exists() else [shutil.which("ruff") or "ruff"]
    done = subprocess.run(
        [*command, "check", "--no-cache", "--stdin-filename", "doc_block.py", "-"],
        input=block.code,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_install_lines_name_the_projects_repository():
    pyproject = (ROOT / "pyproject.toml").read_text()
    repository = re.search(r'^Repository = "([^"]+)"', pyproject, re.M).group(1)
    readme = (ROOT / "README.md").read_text()
    assert f"git clone {repository} " in readme
    assert f'"langchain-mq9 @ git+{repository}"' in readme
    # and the first screen says not to take the name from PyPI
    assert "not with `pip install langchain-mq9`" in "\n".join(readme.splitlines()[:15])


def test_every_option_of_the_toolkit_and_of_mq9_mcp_is_documented():
    from langchain_mq9 import Mq9Toolkit
    from mq9_mcp.cli import build_parser

    toolkit_doc = (ROOT / "docs" / "toolkit.md").read_text()
    undocumented = [
        f for f in Mq9Toolkit.model_fields if not re.search(rf"[`(, ]{f}=", toolkit_doc)
    ]
    assert not undocumented, f"docs/toolkit.md has no row for {undocumented}"
    mcp_doc = (ROOT / "docs" / "mcp.md").read_text()
    flags = {
        flag
        for action in build_parser()._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag not in ("--help", "--version")
    }
    assert not [f for f in flags if f"`{f}" not in mcp_doc]
