"""The official mq9 JavaScript SDK (robustmq/mq9 ``javascript/``), built once per snapshot for
the interop tests: its folder taken from the snapshot (testbed/support/sdk_snapshot.py), installed
from its lock file (``npm ci``) and compiled (``tsc``) in
``~/.cache/langchain-mq9/js-sdk/<key>`` (``$XDG_CACHE_HOME`` if set), reused by later runs.

``python -m testbed.support.js_sdk`` builds it ahead of time: the real-broker lane
(testbed/robustmq_lane.sh) does so before it enters a network namespace, where npm's registry is
out of reach."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from testbed.support.sdk_snapshot import SnapshotMissing, sdk_repo, write_folder

_INSTALL_TIMEOUT = 180  # npm ci, from the registry
_COMPILE_TIMEOUT = 120  # tsc
# our own driver: one section of SDK calls against a broker, each call's outcome printed as JSON
_DRIVER = Path(__file__).resolve().parent / "interop_driver.mjs"
_DRIVER_TIMEOUT = 60  # one driver section


class JsSdkUnavailable(Exception):
    """The SDK cannot be built here; the message says why and what would make it."""


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "langchain-mq9" / "js-sdk"


def _run(command: list[str], cwd: Path, timeout: float) -> tuple[int | None, str]:
    """Run ``command``; (exit code or None on timeout, the tail of its output). A timeout
    kills the whole process group, npm's children included."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output.decode(errors="replace")[-2000:]
    return process.returncode, output.decode(errors="replace")[-2000:]


def _snapshot_key(repo: Path) -> str:
    """A cache key for the snapshot's ``javascript/``: its files' digest in a checkout, else
    the git directory's HEAD."""
    sources = repo / "javascript"
    if (sources / "src" / "client.ts").is_file():
        digest = hashlib.sha256()
        for file in sorted(sources.rglob("*")):
            parts = file.relative_to(sources).parts
            if file.is_file() and not {"node_modules", "dist"} & set(parts):
                digest.update("/".join(parts).encode() + b"\0" + file.read_bytes())
        return f"tree-{digest.hexdigest()[:16]}"
    missing = f"no robustmq/mq9 snapshot at {repo} (set MQ9_SDK_REPO)"
    if not (repo.is_dir() and shutil.which("git")):
        raise JsSdkUnavailable(missing)
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "HEAD^{commit}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if head.returncode != 0:
        raise JsSdkUnavailable(missing)
    return head.stdout.strip()


def _complete(built: Path) -> bool:
    return (built / "dist" / "index.js").is_file() and (built / "node_modules" / "nats").is_dir()


def built_js_sdk(repo: Path) -> Path:
    """The directory holding the built SDK's ``dist/`` and ``node_modules/``, built now unless
    the cache has it; raises JsSdkUnavailable saying why it cannot be."""
    key = _snapshot_key(repo)
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise JsSdkUnavailable(f"{tool} is not installed")
    built = _cache_root() / key
    if _complete(built):
        return built
    built.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=built.parent))
    try:
        try:
            write_folder(repo, "javascript", staging, missing=SnapshotMissing)
        except SnapshotMissing as missing:
            raise JsSdkUnavailable(str(missing)) from None
        sources = staging / "javascript"
        # The lock file resolves every package on registry.npmmirror.com; fetch the same
        # tarballs (the lock's integrity hashes still apply) from the configured registry
        command = ["npm", "ci", "--no-audit", "--no-fund", "--replace-registry-host=always"]
        if not (sources / "package-lock.json").is_file():
            command[1] = "install"
        code, output = _run(command, sources, _INSTALL_TIMEOUT)
        said = " ".join(command)
        if code is None:
            raise JsSdkUnavailable(f"`{said}` took over {_INSTALL_TIMEOUT} s:\n{output}")
        if code != 0:
            raise JsSdkUnavailable(f"`{said}` failed ({code}):\n{output}")
        # `npx tsc`, without npx's chance of fetching a compiler of its own
        tsc = sources / "node_modules" / "typescript" / "bin" / "tsc"
        code, output = _run(["node", str(tsc)], sources, _COMPILE_TIMEOUT)
        if code != 0:  # a snapshot that does not compile is no reason to skip: it fails
            raise RuntimeError(f"the snapshot's SDK does not compile (tsc: {code}):\n{output}")
        if built.exists() and not _complete(built):  # left by an interrupted older version
            shutil.rmtree(built)
        try:
            sources.rename(built)
        except OSError:  # another run finished first: use theirs
            if not _complete(built):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return built


async def run_driver(js_sdk: Path, url: str, section: str, prefix: str) -> tuple[int, str, str]:
    """Run one section of the driver against the broker at ``url``: (exit code, what it
    printed, what it wrote to stderr)."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(_DRIVER),
        str(js_sdk),
        url,
        prefix,
        section,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), _DRIVER_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        took = f"the driver's {section} section ran over {_DRIVER_TIMEOUT} s"
        raise AssertionError(took) from None
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def drive(js_sdk: Path, url: str, section: str, prefix: str) -> dict:
    """Run one section of the driver against the broker at ``url``: its outcome by call."""
    code, out, err = await run_driver(js_sdk, url, section, prefix)
    assert code == 0, err
    return json.loads(out)


if __name__ == "__main__":
    try:
        print(f"the official JavaScript SDK: {built_js_sdk(sdk_repo())}")
    except JsSdkUnavailable as why:
        print(f"the official JavaScript SDK is not built: {why}")
        sys.exit(1)
