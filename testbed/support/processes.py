"""Ending a process a test started, whatever distribution it belongs to."""

from __future__ import annotations

import subprocess


def end_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it is still there 10 s later; its stderr pipe closed."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stderr is not None:
        process.stderr.close()
