"""The notebooks run top to bottom in a fresh kernel of this interpreter, and are committed clean.

Each notebook is executed headless with nbclient, as Jupyter would run it, with its own folder as
the working directory. A cell that raises (the notebooks assert what they demonstrate) fails the
test. The kernel is this interpreter, so it sees the package under test.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
KERNEL = "langchain-mq9-tests"


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A kernelspec that starts ipykernel with ``sys.executable``, whatever else is installed."""
    root = tmp_path_factory.mktemp("kernels")
    spec_dir = root / KERNEL
    spec_dir.mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "langchain-mq9 tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(root)])


def clean_env() -> dict[str, str]:
    """The kernel's environment: the offline defaults, whatever the developer's shell sets."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MQ9_EXAMPLE_MODEL", "MQ9_SERVER", "NATS_URL")
    }
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # quiets a debugger warning at kernel start
    return env


def test_the_notebooks_are_there():
    expected = {
        "01_quickstart.ipynb",
        "02_langgraph_agents.ipynb",
        "03_mcp_server.ipynb",
        "04_human_in_the_loop.ipynb",
    }
    assert expected <= {p.name for p in NOTEBOOKS}  # any other notebook is run as well


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {cell.get('id')} has outputs"
            assert cell.execution_count is None, f"{path.name}: cell {cell.get('id')} was run"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_in_a_fresh_kernel(path, kernel_specs):
    run_notebook(path, kernel_specs, clean_env())


def run_notebook(path: Path, kernel_specs: KernelSpecManager, env: dict[str, str]) -> None:
    """Run the notebook at ``path`` in a fresh kernel with ``env``: no cell may fail or warn.
    (Also tests/project/test_examples_on_jetstream.py, with MQ9_SERVER naming a broker.)"""
    notebook = nbformat.read(path, as_version=4)
    manager = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=60,
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute(env=env)  # raises CellExecutionError naming the failing cell
    finally:
        # The kernel's clients are freed in reference cycles: collected now, not in a later
        # test (CPython 3.11's ast.parse fails, "AST constructor recursion depth mismatch",
        # when jupyter_client's __del__ runs inside it: test_layout did, after this test)
        del client, manager
        gc.collect()

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells)
    errors = [
        output for cell in code_cells for output in cell.outputs if output.output_type == "error"
    ]
    assert errors == []
    # Nothing deprecated on the way (a LangGraph deprecation notice, say): what a user would see
    # as a warning cell output, the kernel shows on stderr. LangChain's own notice that its MCP
    # client (langchain.mcp, notebook 03) is in beta is what every user of it sees: shown.
    warned = [
        output.text
        for cell in code_cells
        for output in cell.outputs
        if output.output_type == "stream"
        and "Warning" in output.text.replace("LangChainBetaWarning", "")
    ]
    assert warned == []
