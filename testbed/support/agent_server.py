"""A real LangGraph Agent Server for tests: ``langgraph dev --no-browser`` (langgraph-cli[inmem],
the dev extra) serving a small graph from a temporary directory on a free loopback port,
stopped by the test.

    with AgentServer(tmp_path, graphs={"echo": ECHO_GRAPH}) as server:
        server.url                     # http://127.0.0.1:<port>
        server.assistant_ids["echo"]   # the assistant the server made for graph "echo"

``graphs`` maps a graph id to a module's source; each module defines ``graph`` (a compiled
graph). What the server offers is its own (``/runs``, ``/threads``, ``/assistants``,
``/a2a/{assistant_id}`` ...): this file only starts and stops it, offline (no tracing, no
browser, no reload). ``ECHO_GRAPH`` answers the last message's text back, and writes each run's
input to the file named by the environment variable ``AGENT_SERVER_RECORD`` when given, so a
test can see that a run happened and what it was given.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from testbed.ports import unclaimed_port
from testbed.support.waiting import until_sync

START_SECONDS = 120.0  # a hang guard: a cold start imports langgraph-api and its runtime
STOP_SECONDS = 15.0

ECHO_GRAPH = """
import json
import os
from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    mailbox: str


def answer(state: State) -> dict[str, Any]:
    record = os.environ.get("AGENT_SERVER_RECORD")
    if record:
        seen = {
            "mailbox": state.get("mailbox", ""),
            "messages": [str(m.content) for m in state.get("messages", [])],
        }
        with open(record, "a", encoding="utf-8") as out:
            out.write(json.dumps(seen) + "\\n")
    messages = state.get("messages", [])
    text = str(messages[-1].content) if messages else state.get("mailbox", "")
    return {"messages": [AIMessage(content=text)]}


graph = (
    StateGraph(State).add_node("answer", answer).add_edge(START, "answer")
    .add_edge("answer", END).compile()
)
"""


def langgraph_command() -> str | None:
    """The ``langgraph`` command of this interpreter's environment, or None."""
    beside = Path(sys.executable).with_name("langgraph")
    return str(beside) if beside.exists() else shutil.which("langgraph")


class AgentServer:
    """``langgraph dev`` on ``127.0.0.1:<free port>`` for the graphs given (module sources
    by graph id), in ``directory``; ``env`` adds to the server's environment."""

    def __init__(
        self,
        directory: Path,
        graphs: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.graphs = graphs if graphs is not None else {"echo": ECHO_GRAPH}
        self.env = dict(env or {})
        self.port = port or unclaimed_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.assistant_ids: dict[str, str] = {}
        self.log_path = self.directory / "langgraph-dev.log"

    def __enter__(self) -> AgentServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        command = langgraph_command()
        if command is None:
            raise RuntimeError("langgraph-cli is not installed: pip install -e '.[dev]'")
        self.directory.mkdir(parents=True, exist_ok=True)
        for graph_id, source in self.graphs.items():
            (self.directory / f"{graph_id}_graph.py").write_text(source, encoding="utf-8")
        config = {
            "dependencies": ["."],
            "graphs": {g: f"./{g}_graph.py:graph" for g in self.graphs},
        }
        (self.directory / "langgraph.json").write_text(json.dumps(config), encoding="utf-8")
        env = {
            **os.environ,
            "LANGSMITH_TRACING": "false",
            "LANGCHAIN_TRACING_V2": "false",
            "LANGGRAPH_CLI_NO_ANALYTICS": "1",
            "LANGGRAPH_NO_VERSION_CHECK": "1",
            **self.env,
        }
        env.pop("LANGSMITH_API_KEY", None)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                command,
                "dev",
                "--no-browser",
                "--no-reload",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--config",
                "langgraph.json",
            ],
            cwd=self.directory,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers stop with it (the group is signalled)
        )
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"langgraph dev exited:\n{self.log()}")
            found = self.request("POST", "/assistants/search", {"limit": 100})
            self.assistant_ids = {a["graph_id"]: a["assistant_id"] for a in found}
            return set(self.graphs) <= set(self.assistant_ids)

        what = f"langgraph dev serving {sorted(self.graphs)}"
        until_sync(
            ready, timeout=START_SECONDS, what=what, every=0.25, ignoring=(OSError,), show=self.log
        )

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON request to the server (a test's own look at what it holds)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as answer:
            return json.loads(answer.read() or b"null")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(STOP_SECONDS)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_SECONDS)
