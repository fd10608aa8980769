"""Graphs for the agent-call tests: real LangGraph graphs, with a checkpointer where they ask."""

from __future__ import annotations

import asyncio
import operator
from collections import Counter
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt


class TextState(TypedDict):
    text: str
    out: str


def text_graph(work: Any, *, checkpointer: Any = None) -> Any:
    """A one-node graph over ``{"text", "out"}`` running ``work(state) -> out``."""

    async def node(state: TextState) -> dict[str, str]:
        result = work(state["text"])
        if asyncio.iscoroutine(result):
            result = await result
        return {"out": result}

    builder = StateGraph(TextState)
    builder.add_node("work", node)
    builder.add_edge(START, "work")
    builder.add_edge("work", END)
    return builder.compile(checkpointer=checkpointer or InMemorySaver())


def text_io() -> dict[str, Any]:
    """serve_agent's options for a ``text_graph``: the platform's server and LangGraph's face
    alike (the platform's resumes nothing unless told how: LangGraph's ``Command``)."""
    return {
        "to_input": lambda graph, text: {"text": text},
        "to_output": lambda r: r["out"],
        "to_resume": lambda text: Command(resume=text),
    }


class Counting:
    """A graph's work that counts how often each text ran."""

    def __init__(self, pause: float = 0.0) -> None:
        self.runs: Counter[str] = Counter()
        self.pause = pause

    async def __call__(self, text: str) -> str:
        self.runs[text] += 1
        if self.pause:
            await asyncio.sleep(self.pause)
        return text.upper()


def asking(text: str) -> str:
    """Asks which language (``interrupt``), then answers with it."""
    return f"{text} in {interrupt('Which language?')}"


class TalkState(TypedDict):
    text: str
    out: str
    told: Annotated[list[str], operator.add]


def remembering_graph() -> Any:
    """A graph with a memory per LangGraph thread: it answers with all it was told there."""

    def node(state: TalkState) -> dict[str, Any]:
        told = [*state.get("told", []), state["text"]]
        return {"out": "so far you told me: " + " | ".join(told), "told": [state["text"]]}

    builder = StateGraph(TalkState)
    builder.add_node("talk", node)
    builder.add_edge(START, "talk")
    builder.add_edge("talk", END)
    return builder.compile(checkpointer=InMemorySaver())
