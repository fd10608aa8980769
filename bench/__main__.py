"""Run every benchmark and write ``RESULTS.md`` (plus PNG plots beside it) to bench-results/.

    python -m bench                  # the full run, a few minutes on 2 cores
    python -m bench --quick          # tiny sizes, seconds: checks that everything runs
    python -m bench --only latency,broker --out /tmp/bench
    python -m bench --out bench/     # refresh the committed bench/RESULTS.md and plots
    python -m bench --no-fast-path   # the broker on nats-py's public API only

Run it from the repository root. By default the results go to ``bench-results/`` (untracked,
ignored by git), so a run never changes tracked files; ``--out bench/`` writes the committed
ones. Exit status 1 when a benchmark could not run at all (a missed
target is a result, not an error).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import traceback
from pathlib import Path

from . import report
from .config import FULL, QUICK, Config
from .results import Section

SECTIONS = (
    "latency",
    "broker",
    "throughput",
    "mcp",
    "memory",
    "tokens",
    "hostile",
    "groups",
    "discovery",
    "calls",
    "tracing",
    "stores",
    "credentials",
    "a2a_gateway",
    "wake",
)
TITLES = {
    "latency": "Client and tool overhead over NATS (targets 1–3)",
    "broker": "Bundled broker scaling, engine in process (target 4)",
    "throughput": "Dev-broker throughput on nats-server (target 5)",
    "mcp": "MCP over stdio (target 6)",
    "memory": "Broker memory per message (target 7)",
    "tokens": "What the model reads: tool tokens and strict-mode safety (target 8)",
    "hostile": "One hostile client against the honest ones (target 9)",
    "groups": "Competing workers under kill -9 (target 10)",
    "discovery": "Agent discovery by meaning (target 11)",
    "calls": "Agent calls: LLM steps per delegation and call-to-result time (target 12)",
    "tracing": "One trace across agents: tracing's cost to send and fetch (target 13)",
    "stores": "The dev broker's request path and its stores (target 14)",
    "credentials": "Per-agent credentials against the open broker (target 15)",
    "a2a_gateway": "The A2A gateway: an HTTP A2A call through mq9 vs direct (target 16)",
    "wake": "Mail that wakes its agent: arrival to webhook, and one waker's cost (target 17)",
}
NEEDS_NETWORK = {"latency", "throughput", "mcp", "calls", "tracing", "a2a_gateway"}


def _run_section(name: str, cfg: Config, out: Path, network) -> Section:
    if name == "latency":
        from . import latency

        return latency.run(cfg, network)
    if name == "broker":
        from . import broker_scaling

        return broker_scaling.run(cfg, out)
    if name == "throughput":
        from . import throughput

        return throughput.run(cfg, network)
    if name == "tokens":
        from . import tokens

        return tokens.run(cfg)
    if name == "hostile":
        from . import hostile

        return hostile.run(cfg)
    if name == "groups":
        from . import groups_stress

        return groups_stress.run(cfg)
    if name == "discovery":
        from . import discovery

        return discovery.run(cfg)
    if name == "calls":
        from . import calls

        return calls.run(cfg, network)
    if name == "tracing":
        from . import tracing

        return tracing.run(cfg, network)
    if name == "stores":
        from . import stores

        return stores.run(cfg)
    if name == "credentials":
        from . import credentials

        return credentials.run(cfg)
    if name == "a2a_gateway":
        from . import a2a_gateway

        return a2a_gateway.run(cfg, network)
    if name == "wake":
        from . import wake

        return wake.run(cfg)
    if name == "mcp":
        from . import mcp_stdio

        return mcp_stdio.run(cfg, network)
    from . import memory

    return memory.run(cfg)


BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR.parent / "bench-results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument(
        "--only", help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="directory for RESULTS.md and the plots (default: bench-results/ in the "
        "repository, untracked; --out bench/ refreshes the committed results)",
    )
    parser.add_argument(
        "--no-fast-path",
        action="store_true",
        help="the brokers benched use nats-py's public API only (MQ9_BROKER_FAST_PATH=0, "
        "inherited by the processes they run in: nats_floor/fast_path.py)",
    )
    args = parser.parse_args(argv)
    if args.no_fast_path:
        os.environ["MQ9_BROKER_FAST_PATH"] = "0"
    selected = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = [s for s in selected if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}: choose from {', '.join(SECTIONS)}")
    cfg = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    load_before = report.load_average()
    sections: list[Section] = []
    network = None
    try:
        for name in selected:
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            began = time.perf_counter()
            try:
                if name in NEEDS_NETWORK and network is None:
                    from .infra import Network

                    network = Network()
                section = _run_section(name, cfg, args.out, network)
            except Exception as exc:
                traceback.print_exc()
                section = Section(name, TITLES[name], error=f"{type(exc).__name__}: {exc}")
            section.seconds = time.perf_counter() - began
            sections.append(section)
            print(f"[bench] {name} done in {section.seconds:.1f} s", file=sys.stderr, flush=True)
    finally:
        if network is not None:
            network.stop()
    command = "python -m bench" + (" --quick" if args.quick else "")
    if args.only:
        command += f" --only {args.only}"
    if args.no_fast_path:
        command += " --no-fast-path"
    if args.out.resolve() == BENCH_DIR:
        command += " --out bench/"
    path = args.out / "RESULTS.md"
    report.write(
        path,
        sections,
        command=command,
        started=started,
        load_before=load_before,
        quick=cfg.quick,
    )
    print("\n".join(report.table(sections)))
    print(f"\nwritten: {path}")
    return 1 if any(s.error for s in sections) else 0


if __name__ == "__main__":
    sys.exit(main())
