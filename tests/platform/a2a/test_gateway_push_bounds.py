"""The gateway's push configs are bounded per task and per tenant (``gateway_push``:
``MAX_CONFIGS`` a task, ``MAX_TASKS`` tasks with configs a tenant), and a bound is the party's
own (#106, docs/security-broker.md "Whose bound it is"): mallory filling hers leaves bob's config
made. Were the tasks counted over every tenant, bob's first config would be refused.

Played on ``GatewayPush`` itself with a stand-in for each tenant's transport (its reply
mailbox, and a task it owns for each id asked): the bound is the gateway's bookkeeping, no
broker is needed, and the watch of each task waits until the configs are closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from a2a.types.a2a_pb2 import TaskPushNotificationConfig
from a2a.utils.errors import InvalidParamsError

from mq9_platform.a2a.gateway.push import MAX_CONFIGS, MAX_TASKS, GatewayPush
from mq9_platform.a2a.sdk.transport import Mq9Transport
from mq9_platform.wake.deliver import Destinations

URL = "http://127.0.0.1:9/hook"  # never POSTed to: no task here ever moves


class Tenant:
    """What ``GatewayPush`` asks of a tenant's transport: its reply mailbox, its tasks (every
    id is one of its own here), and a task's states (none come: the watch just waits)."""

    def __init__(self, name: str) -> None:
        self.reply_mailbox = f"mq9.calls.gateway.{name}"

    async def get_task(self, request: Any) -> None:
        return None

    async def states(self, task_id: str, context: Any, until: Any) -> AsyncIterator[dict]:
        await asyncio.Event().wait()  # cancelled by GatewayPush.close
        yield {}


def _config(task_id: str) -> TaskPushNotificationConfig:
    return TaskPushNotificationConfig(task_id=task_id, url=URL)


async def _made(push: GatewayPush, tenant: Tenant, task_id: str) -> TaskPushNotificationConfig:
    return await push.create(cast(Mq9Transport, tenant), _config(task_id))


async def test_a_tenant_at_its_tasks_with_push_configs_leaves_another_tenants_config_made():
    push = GatewayPush(Destinations(["127.0.0.1"]))
    mallory, bob = Tenant("mallory"), Tenant("bob")
    try:
        for n in range(MAX_TASKS):
            await _made(push, mallory, f"m{n}")
        with pytest.raises(InvalidParamsError, match=f"at most {MAX_TASKS} tasks"):
            await _made(push, mallory, f"m{MAX_TASKS}")
        made = await _made(push, bob, "b0")  # bob's own bound: untouched by mallory's
        assert made.task_id == "b0" and made.url == URL
    finally:
        await push.close()


async def test_a_task_at_its_configs_leaves_the_tenants_other_task_its_own():
    push = GatewayPush(Destinations(["127.0.0.1"]))
    mallory = Tenant("mallory")
    try:
        for _ in range(MAX_CONFIGS):
            await _made(push, mallory, "full")
        with pytest.raises(InvalidParamsError, match=f"at most {MAX_CONFIGS} push configs"):
            await _made(push, mallory, "full")
        assert (await _made(push, mallory, "other")).task_id == "other"
    finally:
        await push.close()
