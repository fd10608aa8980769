"""The benchmark command runs end to end on tiny sizes and writes its results table.

Nothing here looks at timings: benchmarks measure speed, tests only check that they run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TARGET_KEYS = [
    "1",
    "2a",
    "2b",
    "2b-reader",
    "2b-requests",
    "2c",
    "3a",
    "3b",
    "3c",
    "3d",
    "4a",
    "4b",
    "4c",
    "4d",
    "4e",
    "5",
    "6",
    "7a",
    "7b",
    "7c",
    "8a",
    "8b",
    "8c",
    "8d",
    "8e",
    "8f",
    "9a",
    "9b",
    "9c",
    "9d",
    "9e",
    "9h",
    "9i",
    "10a",
    "10b",
    "10c",
    "10d",
    "11a",
    "11b",
    "11c",
    "11d",
    "11e",
    "11f",
    "11g",
    "11h",
    "11i",
    "11j",
    "11k",
    "11l",
    "11m",
    "11n",
    "11o",
    "12a",
    "12b",
    "13a",
    "13b",
    "13c",
    "13d",
    "14a",
    "14b",
    "15a",
    "15b",
    "16a",
    "16b",
    "16c",
    "17a",
]


def test_quick_benchmark_run_writes_a_results_table(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        # A bound, not a speed check: beside two busy processes the quick run (9e's flood
        # included) took over 180 s on 2 cores; quiet, about a minute.
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = (tmp_path / "RESULTS.md").read_text()
    assert (
        "| # | Benchmark | Ours (median) | Baseline (median) | Ratio | Target | Result |" in results
    )
    assert "error:" not in results, results
    rows = re.findall(r"^\| ([\w-]+) \| .* \| (\*\*pass\*\*|\*\*MISS\*\*|n/a) \|$", results, re.M)
    assert [key for key, _ in rows] == TARGET_KEYS
    assert "Date:" in results and "CPU" in results
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "mailbox_scaling.png").stat().st_size > 0
    assert (tmp_path / "discover_vs_registry.png").stat().st_size > 0


def test_a_default_run_writes_outside_the_tracked_files():
    # `python -m bench` writes outside the tracked files: bench/RESULTS.md and the plots only
    # with --out bench/
    from bench.__main__ import BENCH_DIR, DEFAULT_OUT

    assert DEFAULT_OUT == ROOT / "bench-results" and BENCH_DIR == ROOT / "bench"
    assert "bench-results/" in (ROOT / ".gitignore").read_text().splitlines()
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "bench-results/" in run.stdout and "--out bench/" in run.stdout


def _js_scale(argv: list[str], out: Path) -> dict[str, Any]:
    """``python -m bench.js_scale ARGV --out OUT`` on tiny sizes: its results, once it ran."""
    tiny = ["--seconds", "0.5", "--clients", "1", "--in-flight", "2", "--mailboxes", "2"]
    run = subprocess.run(
        [sys.executable, "-m", "bench.js_scale", *argv, *tiny, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,  # a bound, not a speed check: nats-servers and brokers started
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results: dict[str, Any] = json.loads(out.read_text())
    return results


def test_js_scale_runs_configurations_in_either_order(tmp_path):
    # `--brokers 2,1`: each configuration makes its mailboxes (not only a first one of one
    # broker), and a smaller configuration after a larger one stops brokers
    results = _js_scale(["--brokers", "2,1", "--ops", "send"], tmp_path / "order.json")
    for count in (2, 1):
        row = results[f"{count}_brokers_send"]
        assert row["operations"] > 0 and row["errors"] == [], row
    assert len(results["broker_rss"]) == 1  # the last configuration's one broker


def test_js_scale_sets_the_credentialed_path_against_the_open_one(tmp_path):
    # `--credentials`, two clusters (one as `credentials setup` configures it), an open
    # and an enforcing `mq9-dev-broker --store jetstream`, each operation on both
    pytest.importorskip("nkeys")
    argv = ["--credentials", "--brokers", "1", "--rounds", "1", "--ops", "send,ack"]
    results = _js_scale(argv, tmp_path / "credentials.json")
    for side in ("open", "credentials"):
        for op in ("send", "ack"):
            (row,) = results[f"1_{side}_{op}"]
            assert row["operations"] > 0 and row["errors"] == [], row


READERS = ("caught up", "1 new", "10 new", "behind")


def test_js_reads_sets_each_reader_against_the_mailbox_size(tmp_path):
    # session 29: a FETCH's reads as the mailbox grows, the server's CPU a read at the
    # largest size against the smallest, for a reader caught up, one with 1 and 10 new and
    # one behind by half the mailbox
    out = tmp_path / "reads.json"
    argv = ["--sizes", "20,60", "--rounds", "3", "--out", str(out)]
    run = subprocess.run(
        [sys.executable, "-m", "bench.js_reads", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,  # a bound, not a speed check: a nats-server started
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["sizes"] == [20, 60]
    for size in ("20", "60"):
        for reader in READERS:
            row = results["ours"]["reads"][size][reader]
            assert row["server_ms"] >= 0 and row["own_ms"] > 0, row
    assert set(results["ours"]["growth"]) == set(READERS)
    assert "largest / smallest" in run.stdout
