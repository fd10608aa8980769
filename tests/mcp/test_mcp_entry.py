"""``mq9-mcp``'s entry point (mq9_mcp.py, issue #54): a Ctrl-C while the server is still
loading (its imports take a second or more) ends it quietly, as one while it serves does; the
hint without the MCP SDK is tests/mcp/test_mcp_adapters_venv.py's part."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MQ9_MCP = Path(sys.executable).with_name("mq9-mcp")


def loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
def test_ctrl_c_while_it_loads_ends_it_without_a_traceback():
    for _ in range(3):
        process = subprocess.Popen(
            [str(MQ9_MCP), "--server", "memory://"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # pydantic's compiled core is loaded by the server's imports, after the entry point
            # checked the SDK: the interrupt lands while the server loads (or just after)
            deadline = time.monotonic() + 60
            while not loaded(process.pid, "pydantic_core"):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "mq9-mcp never started loading"
                time.sleep(0.001)
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
        assert process.returncode == 0, stderr
