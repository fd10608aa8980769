"""How much each benchmark measures: the full run (a few minutes on 2 cores) and ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    quick: bool
    # latency: (rounds, calls per round) for each comparison
    client_rounds: tuple[int, int]
    tool_rounds: tuple[int, int]
    connect_rounds: tuple[int, int]
    sync_rounds: tuple[int, int]
    # broker engine in process
    mailbox_sizes: tuple[int, ...]
    engine_rounds: tuple[int, int]
    registry_sizes: tuple[int, ...]
    discover_rounds: tuple[int, int]
    ghost_check_sizes: tuple[int, ...]  # agents, for the search check's cost (11f, 11g)
    rerank_sizes: tuple[int, ...]  # agents, for what agent_discover(rerank=True) costs
    # throughput
    load_processes: int
    workers_per_process: int
    load_rounds: int
    load_seconds: float
    # MCP over stdio
    mcp_rounds: tuple[int, int]
    # memory
    memory_messages: int
    # stores (target 14): (rounds, SENDs per sender per round) under load, and the sizes the
    # growth figures are taken at
    store_rounds: tuple[int, int]
    store_sizes: tuple[int, ...]


FULL = Config(
    quick=False,
    client_rounds=(40, 100),
    tool_rounds=(24, 40),
    connect_rounds=(10, 10),
    sync_rounds=(20, 25),
    mailbox_sizes=(100, 1_000, 10_000, 100_000),
    engine_rounds=(20, 100),
    registry_sizes=(100, 1_000, 3_000, 10_000),
    discover_rounds=(10, 5),
    ghost_check_sizes=(10, 1_000, 10_000),
    rerank_sizes=(200, 2_000),
    load_processes=2,
    workers_per_process=16,
    load_rounds=6,
    load_seconds=2.0,
    mcp_rounds=(20, 25),
    memory_messages=100_000,
    store_rounds=(6, 100),
    store_sizes=(1_000, 10_000, 100_000),
)

QUICK = Config(
    quick=True,
    client_rounds=(2, 5),
    tool_rounds=(2, 5),
    connect_rounds=(2, 2),
    sync_rounds=(2, 3),
    mailbox_sizes=(100, 1_000),
    engine_rounds=(2, 10),
    registry_sizes=(50, 200),
    discover_rounds=(2, 2),
    ghost_check_sizes=(10, 200),
    rerank_sizes=(50,),
    load_processes=1,
    workers_per_process=4,
    load_rounds=1,
    load_seconds=0.3,
    mcp_rounds=(2, 3),
    memory_messages=2_000,
    store_rounds=(2, 10),
    store_sizes=(100, 1_000),
)
