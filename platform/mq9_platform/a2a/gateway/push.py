"""Push notifications through the A2A gateway: an HTTP client's configs for its
tenant's tasks, and the POST of each new state of such a task to their URLs (docs/a2a.md,
"The gateway").

The gateway keeps the configs, not the agent: an HTTP client sets one while the mq9 agent is
offline, and the gateway follows the task in the tenant's reply mailbox (as GetTask reads it)
and POSTs each new state through the wake package's delivery: the operator's allow-list
(``Destinations``: a URL inside the network it does not name is refused when the config is
made, and again at each POST, since a name may resolve elsewhere later), retries with backoff,
the config's token and a JWT signed with the gateway's own key (``push_auth.PushSigner``: the
push never carries it; receivers check it against the gateway's JWKS,
``/.well-known/jwks.json``). A tenant's configs are keyed by its own reply mailbox: another
tenant's request finds no task. Configs live in the gateway
process until their task ends; a restarted gateway has none (the client sets them again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from a2a.client.client import ClientCallContext
from a2a.types.a2a_pb2 import (
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    TaskPushNotificationConfig,
)
from a2a.utils.errors import InvalidParamsError

from ...wake.deliver import Deliverer, Destinations, Refused, push_headers
from .. import mail as w
from ..push_auth import PushSigner
from ..sdk.protojson import json_object, to_proto
from ..sdk.transport import Mq9Transport
from ..shapes import JsonObject

MAX_CONFIGS = 8  # per task, as the served agent keeps (server.py)
MAX_TASKS = 100  # tasks with configs, per tenant: a tenant cannot make the gateway watch more
# How long the gateway follows a task for its pushes: the agent may be offline that long.
WATCH_SECONDS = 24 * 3600.0
# Lengths kept of what a config names (the JSON-RPC body itself may be 2 MB)
MAX_URL, MAX_SECRET = 2048, 4096

log = logging.getLogger("mq9_platform.a2a.gateway")

Key = tuple[str, str]  # (the tenant's reply mailbox, task id)


class GatewayPush:
    """The gateway's push configs and the watchers that deliver them (``close()`` at the end)."""

    def __init__(
        self,
        destinations: Destinations,
        *,
        deliverer: Deliverer | None = None,
        watch_seconds: float = WATCH_SECONDS,
        signer: PushSigner | None = None,
    ) -> None:
        """``signer``: the key each push's JWT is signed with (``PushSigner.load`` keeps one
        across restarts; by default a fresh one, its JWKS served by the gateway either way)."""
        self.deliverer = deliverer or Deliverer(destinations)
        self.signer = signer or PushSigner.generate()  # iss: the gateway's URL (gateway_app)
        self.watch_seconds = watch_seconds
        self._configs: dict[Key, dict[str, JsonObject]] = {}
        self._watching: dict[Key, asyncio.Task[None]] = {}

    def __repr__(self) -> str:
        return f"GatewayPush({self.deliverer.destinations!r}, tasks={len(self._configs)})"

    async def close(self) -> None:
        watchers = list(self._watching.values())
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await self.deliverer.close()

    async def _owned(self, transport: Mq9Transport, task_id: str) -> Key:
        """The task's key, if the transport's tenant sent it (else ``TaskNotFoundError``)."""
        await transport.get_task(GetTaskRequest(id=task_id))
        return (transport.reply_mailbox, task_id)

    async def create(
        self, transport: Mq9Transport, request: TaskPushNotificationConfig
    ) -> TaskPushNotificationConfig:
        key = await self._owned(transport, request.task_id)
        config = json_object(request)
        config.pop("tenant", None)
        url = request.url
        if not url or len(url) > MAX_URL:
            raise InvalidParamsError(f"a push notification config needs a url (<= {MAX_URL})")
        auth = request.authentication
        if len(request.token) > MAX_SECRET or len(auth.credentials) > MAX_SECRET:
            raise InvalidParamsError(f"a push config's token or credentials: <= {MAX_SECRET}")
        try:
            await self.deliverer.destinations.check_url(url)
        except Refused as exc:
            raise InvalidParamsError(f"push notification url refused: {exc}") from None
        configs = self._configs.get(key, {})
        config_id = request.id if w.is_valid_id(request.id) else w.new_id()
        if config_id not in configs and len(configs) >= MAX_CONFIGS:
            raise InvalidParamsError(f"at most {MAX_CONFIGS} push configs per task")
        tenant_tasks = sum(1 for mailbox, _ in self._configs if mailbox == key[0])
        if key not in self._configs and tenant_tasks >= MAX_TASKS:
            raise InvalidParamsError(f"at most {MAX_TASKS} tasks with push configs at once")
        config.update(id=config_id, taskId=key[1])
        self._configs.setdefault(key, {})[config_id] = config
        if key not in self._watching:
            watcher = asyncio.ensure_future(self._watch(key, transport))
            self._watching[key] = watcher
        return to_proto(config, TaskPushNotificationConfig)

    async def get(
        self, transport: Mq9Transport, request: GetTaskPushNotificationConfigRequest
    ) -> TaskPushNotificationConfig:
        key = await self._owned(transport, request.task_id)
        config = self._configs.get(key, {}).get(request.id)
        if config is None:
            raise InvalidParamsError(f"push config {request.id[:80]!r} not found")
        return to_proto(config, TaskPushNotificationConfig)

    async def list(
        self, transport: Mq9Transport, request: ListTaskPushNotificationConfigsRequest
    ) -> ListTaskPushNotificationConfigsResponse:
        key = await self._owned(transport, request.task_id)
        configs = [
            to_proto(c, TaskPushNotificationConfig) for c in self._configs.get(key, {}).values()
        ]
        return ListTaskPushNotificationConfigsResponse(configs=configs)

    async def delete(
        self, transport: Mq9Transport, request: DeleteTaskPushNotificationConfigRequest
    ) -> None:
        key = await self._owned(transport, request.task_id)
        configs = self._configs.get(key, {})
        configs.pop(request.id, None)
        if not configs:
            self._forget(key)

    def _forget(self, key: Key) -> None:
        self._configs.pop(key, None)
        watcher = self._watching.pop(key, None)
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()

    async def _watch(self, key: Key, transport: Mq9Transport) -> None:
        """POST each new state of the task to its configs' URLs, in order, until it ends."""
        task_id = key[1]
        follow = ClientCallContext(timeout=self.watch_seconds)
        try:
            async for snapshot in transport.states(task_id, follow, until=w.FINAL):
                shown = snapshot.copy()
                meta = {k: v for k, v in (shown.get("metadata") or {}).items() if k != "mq9"}
                shown["metadata"] = meta
                body = w.json_text({"task": shown}).encode()
                state = w.short_state(w.task_state(snapshot))
                for config in list(self._configs.get(key, {}).values()):
                    await self._post(config, body, f"push of task {task_id} ({state})")
        except Exception as exc:  # the broker failed under the watch: the client still polls
            log.warning("gateway: pushes of task %s stopped: %s", task_id, exc)
        finally:
            with contextlib.suppress(KeyError):
                if self._watching[key] is asyncio.current_task():
                    self._forget(key)

    async def _post(self, config: JsonObject, body: bytes, what: str) -> None:
        try:
            headers = push_headers(config, body, self.signer.headers)
            await self.deliverer.post(config["url"], body, headers, what)
        except Exception as exc:  # set aside after its tries: GetTask still answers
            log.warning("gateway: %s failed: %s", what, type(exc).__name__)
