"""Which chat model drives the example agents.

By default a ``ScriptedChatModel``: it plays a fixed script of tool calls that read the real
tool results, so the examples and notebooks run offline, without an API key, the same way every
time. Name a real model to let it drive the same agents instead, with the same system prompts:

    python examples/two_agents.py --model openai:gpt-4.1-mini
    MQ9_EXAMPLE_MODEL=anthropic:claude-sonnet-4-5 python examples/two_agents.py

A model is named ``provider:model`` as ``langchain.chat_models.init_chat_model`` understands it;
that needs ``pip install langchain`` plus the provider's package (``langchain-openai``,
``langchain-anthropic``, ``langchain-ollama`` for a local model, ...) and its API key.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from langchain_mq9.testing import ScriptedChatModel

MODEL_ENV = "MQ9_EXAMPLE_MODEL"


def add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        metavar="PROVIDER:NAME",
        help=f"a real chat model to drive the agents, e.g. openai:gpt-4.1-mini (default: "
        f"${MODEL_ENV}, else the offline scripted model)",
    )


def model_spec(requested: str | None = None) -> str | None:
    """The real model asked for (argument first, then ``$MQ9_EXAMPLE_MODEL``), or None."""
    return (requested or os.environ.get(MODEL_ENV) or "").strip() or None


def chat_model(script: Sequence[Any], requested: str | None = None) -> Any:
    """The scripted model playing ``script``, or the real model named by ``requested`` or
    ``$MQ9_EXAMPLE_MODEL``. One call per agent: each agent gets its own script."""
    spec = model_spec(requested)
    if spec is None:
        return ScriptedChatModel(steps=list(script))
    try:
        from langchain.chat_models import init_chat_model
    except ImportError:
        raise SystemExit(
            f"a real model ({spec}) needs the langchain package: pip install langchain "
            "plus the provider's package, e.g. langchain-openai"
        ) from None
    try:
        return init_chat_model(spec)
    except (ImportError, ValueError) as exc:
        raise SystemExit(f"cannot use the model {spec!r}: {exc}") from None


def describe(requested: str | None = None) -> str:
    spec = model_spec(requested)
    return spec if spec else "the offline scripted model (ScriptedChatModel)"
