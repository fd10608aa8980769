"""What the resume tests share (#101): a long task (an a2a-sdk executor reporting a step every
few milliseconds until told to finish), a client that reads a task's events until cut and
resubscribes with its last cursor, and the check that the events it got are the task's, each
once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from dataclasses import dataclass, field

from a2a.client.client import ClientCallContext
from a2a.server.agent_execution import AgentExecutor
from a2a.server.tasks import TaskUpdater
from a2a.types.a2a_pb2 import Part, SubscribeToTaskRequest, Task, TaskState

from mq9_platform.a2a import mail as w

FINAL = (
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_REJECTED,
)


class Steps(AgentExecutor):
    """A long task: a ``working`` update "step N" every ``every`` seconds until ``finish`` is
    set, then an artifact naming the count, then completed."""

    def __init__(self, every: float = 0.03) -> None:
        self.every = every
        self.finish = asyncio.Event()
        self.started = asyncio.Event()

    async def execute(self, context, event_queue) -> None:
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        steps = 0
        self.started.set()
        while not self.finish.is_set():
            steps += 1
            said = updater.new_agent_message([Part(text=f"step {steps}")])
            await updater.update_status(TaskState.TASK_STATE_WORKING, said)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finish.wait(), self.every)
        await updater.add_artifact([Part(text=f"{steps} steps")])
        await updater.complete()

    async def cancel(self, context, event_queue) -> None:
        return None


def place(task: Task) -> dict:
    """The task's place among its events (``metadata[RESUME_EXTENSION]``), or {}."""
    if w.RESUME_EXTENSION not in task.metadata:
        return {}
    return {k: v for k, v in task.metadata[w.RESUME_EXTENSION].items()}


def step_of(task: Task) -> int | None:
    """N of a "step N" working state."""
    text = "".join(p.text for p in task.status.message.parts)
    return int(text.split()[1]) if text.startswith("step ") else None


@dataclass
class Reader:
    """One client's view of one task across its cuts: every numbered event it got, in the
    order got, and its cursor (the last event's number)."""

    task_id: str
    cursor: int | None = None
    got: list[int] = field(default_factory=list)
    steps: dict[int, int] = field(default_factory=dict)  # event number -> its step
    gaps: list[dict] = field(default_factory=list)
    first_events: list[dict] = field(default_factory=list)  # each stream's first place
    ended: bool = False
    streams: int = 0
    errors: list[str] = field(default_factory=list)  # how streams ended under a kill
    replayed: int = 0  # events a resubscribe replayed (older than the task as it stood)
    _caught_up: int = -1

    def summary(self) -> str:
        return (
            f"{len(self.got)} events {self.got[0]}..{self.got[-1]}, {self.streams} streams, "
            f"{self.replayed} replayed, gaps {self.gaps}, cuts by kill {len(self.errors)}"
        )

    def took(self, task: Task, first: bool) -> None:
        where = place(task)
        if first:
            self.first_events.append(where)
            self._caught_up = int(where.get("snapshot", -1))
        elif "seq" in where and int(where["seq"]) <= self._caught_up:
            self.replayed += 1  # kept while the client was away, replayed from the mailbox
        if "gap" in where:
            self.gaps.append(dict(where["gap"]))
        if "seq" in where:
            seq = int(where["seq"])
            self.got.append(seq)
            self.cursor = seq
            step = step_of(task)
            if step is not None:
                self.steps[seq] = step
        if task.status.state in FINAL:
            self.ended = True

    async def read(self, a2a, *, cut_after: float | None, killed: bool = False) -> None:
        """Subscribe (with the cursor, once there is one) and read until the stream ends or
        ``cut_after`` seconds pass (then the connection is dropped: the stream's generator
        closed, its HTTP connection or gRPC call with it); ``killed``: or until the gateway
        dies under it (the stream's error taken as the cut)."""
        if killed:
            try:
                await self.read(a2a, cut_after=cut_after)
            except Exception as exc:  # the gateway was killed: the connection's error
                self.errors.append(type(exc).__name__)
            return
        context = None
        if self.cursor is not None:
            context = ClientCallContext(service_parameters={"Last-Event-ID": str(self.cursor)})
        self.streams += 1
        first = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(cut_after):
                stream = a2a.subscribe(SubscribeToTaskRequest(id=self.task_id), context=context)
                async for event in stream:
                    self.took(event.task, first)
                    first = False

    def check(self) -> None:
        """Every event of the task from the first one this client got to the last, each once,
        in order; each step's event in the step's order."""
        assert self.got, "no event"
        start = self.got[0]
        assert self.got == list(range(start, start + len(self.got))), _first_wrong(self.got)
        # (the artifact's update repeats the last step's words: one step, two events)
        steps = [self.steps[s] for s in self.got if s in self.steps]
        steps = [s for i, s in enumerate(steps) if i == 0 or s != steps[i - 1]]
        assert steps == list(range(steps[0], steps[0] + len(steps))), "steps out of order"
        assert not self.gaps, self.gaps
        assert self.ended


def _first_wrong(got: list[int]) -> str:
    for before, after in itertools.pairwise(got):
        if after != before + 1:
            return f"after event {before} came {after} (of {len(got)} events)"
    return "?"


def cut_moments(seed: int, cuts: int) -> list[tuple[float, float]]:
    """``cuts`` random (read for, wait before resubscribing) pairs, in seconds."""
    rng = random.Random(seed)
    return [(rng.uniform(0.05, 0.6), rng.uniform(0.0, 0.3)) for _ in range(cuts)]
