"""The official mq9 SDKs (robustmq/mq9) for the interop tests: where their snapshot is, and one
of its folders written out at test time. Nothing of the SDKs is kept in this repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

# The mirror the project's tooling fetches beside this checkout; MQ9_SDK_REPO names another
# git directory or checkout.
DEFAULT_MIRROR = Path(__file__).resolve().parents[3] / ".mirror" / "robustmq+mq9" / "repo"


def sdk_repo() -> Path:
    return Path(os.environ.get("MQ9_SDK_REPO", DEFAULT_MIRROR))


class SnapshotMissing(Exception):
    """The snapshot, or the folder asked for, is not on this machine."""


def write_folder(
    repo: Path, folder: str, target: Path, missing: type[BaseException] | None = None
) -> None:
    """Write ``folder`` of the snapshot under ``target`` (same relative path), from a checkout
    or from the git directory's HEAD; where the snapshot does not hold it, raise ``missing``
    (by default: skip the test)."""

    def absent(why: str) -> None:
        if missing is not None:
            raise missing(why)
        pytest.skip(why)

    if (repo / folder).is_dir():
        shutil.copytree(
            repo / folder, target / folder, ignore=shutil.ignore_patterns("node_modules", "dist")
        )
        return
    if not (repo.is_dir() and shutil.which("git")):
        absent(f"no robustmq/mq9 snapshot at {repo} (set MQ9_SDK_REPO)")
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "HEAD", folder], capture_output=True, check=False
    )
    if archive.returncode != 0:
        absent(f"the robustmq/mq9 snapshot at {repo} has no {folder}/")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
