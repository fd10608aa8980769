"""Children started beside threads that set environment variables (CI: "[Errno 14] Bad
address: '.../nats-server'", a thread starting servers while others loaded the embedding
model, which sets KMP_DUPLICATE_LIB_OK and OPENBLAS_MAIN_FREE). A child started by vfork
without an ``env`` reads the live ``environ`` while it execs; ``spawn_env`` gives it its own.
Played with a thread churning the environment and three starting processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from mq9_wire.nats_floor.server_process import spawn_env

STARTS = 150  # each of three threads: enough that a bare env=None fails many here


@pytest.mark.slow  # starts 450 processes
def test_children_start_whatever_another_thread_sets_in_the_environment():
    stop = threading.Event()
    failures: list[Exception] = []  # a start's, or the copy's (a variable gone meanwhile)

    def churn() -> None:
        n = 0
        while not stop.is_set():
            os.environ[f"MQ9_CHURN_{n % 40}"] = "x" * (n % 200)
            if n % 40 == 39:
                for i in range(40):
                    os.environ.pop(f"MQ9_CHURN_{i}", None)
            n += 1

    def start() -> None:
        for _ in range(STARTS):
            try:
                subprocess.run([sys.executable, "-S", "-c", ""], env=spawn_env(), check=True)
            except Exception as exc:  # (not a thread's unhandled one: pytest only warns)
                failures.append(exc)

    churning = threading.Thread(target=churn)
    churning.start()
    try:
        starting = [threading.Thread(target=start) for _ in range(3)]
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
    finally:
        stop.set()
        churning.join()
        for i in range(40):
            os.environ.pop(f"MQ9_CHURN_{i}", None)
    assert failures == []
