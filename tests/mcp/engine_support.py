"""A broker engine for the tests whose agents register, its embedding model loaded first.

A broker loads the model at start (``Broker``: ``load_model_soon``). An engine that has not
loads it inside the first REGISTER, whose answer the agent's client waits for only its request
timeout (5 s): a cold load takes longer on a busy machine (9 s measured with a load average of
12), so the first test of a process to register an agent failed with ``RequestTimeout`` there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from mcp_support import served_engine

from langchain_mq9.broker import BrokerEngine

# The model's load is waited for this long at most (it is read once per process).
MODEL_LOAD_SECONDS = 120


@contextlib.asynccontextmanager
async def engine_with_model(nats_url: str) -> AsyncIterator[BrokerEngine]:
    """``served_engine`` on ``nats_url``, once its embedding model is loaded."""
    async with served_engine(nats_url) as engine:
        async with asyncio.timeout(MODEL_LOAD_SECONDS):
            await asyncio.wrap_future(engine.load_model_soon())
        yield engine
