"""The mq9 operation catalog as MCP tools, over one broker connection per process:
``Mq9McpServer``, a method for each request it handles, and what it announces.

Nothing here is per tool: all comes from ``mq9_platform.operations.catalog.OPERATIONS``, so the MCP
tools are the LangChain tools under another protocol (the same descriptions and input schemas,
byte for byte). One tool call, its bound, result and log line are ``tool_calls.py``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

import anyio
import anyio.lowlevel
from mcp import types
from mcp.server.context import CallNext, HandlerResult
from mcp.server.context import ServerRequestContext as Ctx  # one request's, to each handler
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from mq9_platform._http.ssrf import HostPolicy
from mq9_platform._version import __version__
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.catalog import OPERATIONS, OperationError, ToolPolicy, prefixed
from mq9_platform.operations.context import Progress
from mq9_platform.operations.errors import explain
from mq9_platform.operations.schemas import MAX_TOOL_WAIT_MS
from mq9_platform.operations.views import DATA_NOTE
from mq9_wire.nats_floor.redaction import redact
from mq9_wire.protocol.errors import Mq9Error

from . import events, questions, resources, task_events, tasks, watch, webhooks
from .http.principals import ActingConnection, PrincipalConnections, acting_for, stop_acting
from .http.scope_check import granted, may_use, may_use_prompt, may_use_tool, scope_missing
from .http.scopes import READ
from .mailbox_owners import MailboxOwners
from .owner_boundary import OwnerBoundary
from .owners import ClientPolicies, client_of
from .task_events import TaskLog

# One tool call's parts (tool_calls.py); those named "as" are re-exported:
# callers import them from here
from .tool_calls import (
    CALL_GRACE_SECONDS,
    arguments_valid,
    logged_call,
    operation_named,
    progress_reporter,
)
from .tool_calls import call_operation as call_operation
from .tool_calls import call_wait as call_wait
from .tool_calls import error_result as error_result
from .tool_calls import mcp_policy as mcp_policy
from .tool_calls import tool_annotations as tool_annotations
from .tool_calls import tool_definitions as tool_definitions

log = logging.getLogger("mq9_mcp")

SERVER_NAME = "mq9"

INSTRUCTIONS = (
    "Persistent mailboxes and an agent registry over mq9. Register with agent_register, find "
    "other agents with agent_discover, send work with send_message (put a reply_to mailbox in "
    "a JSON payload to get an answer), look with query_messages, take what to handle with "
    "fetch_messages (max_wait_ms to wait for a reply) and confirm it with ack_messages. "
    + DATA_NOTE
)

# The broker connection retries briefly, then gives up, and the next tool call opens it again.
# nats-py uses the same settings for the first connect, so long retries would leave a tool call
# hanging for their whole duration while the broker is down; short ones answer in about a second.
RECONNECT_ATTEMPTS = 2
RECONNECT_DELAY = 0.5

# The most a tool call run as an MCP task waits (the tools' own bound): its client polls the
# task, so no request outlives a client's timeout (a plain call waits ``wait_cap_ms``).
TASK_WAIT_CAP_MS = MAX_TOOL_WAIT_MS


class Mq9McpServer(Server):
    """An MCP server (the SDK's low-level ``Server``) whose tools are the mq9 operations, a
    method for each request it handles.

    ``connection`` is shared by every client; each client gets a ``ToolPolicy`` of its own
    (``policies``, a ``ClientPolicies``): the same rules, its own state, so a mailbox one client
    creates is not opened to another by ``allowed_mailboxes``. With ``sessions_compete`` (HTTP)
    clients name their worker with the ``Mq9-Worker`` header; a stdio server is the group's one
    reader, or ``--worker NAME``. Tasks are offered in the capabilities of each era (2025-11-25's
    ``tasks``, 2026-07-28's extension); ``watches`` holds the mailbox subscriptions.
    """

    def __init__(
        self,
        connection: Mq9Connection,
        policy: ToolPolicy | None = None,
        *,
        sessions_compete: bool = False,
        webhook_hosts: Sequence[str] = (),
        heartbeat_seconds: float = events.HEARTBEAT_SECONDS,
        state_keys: Sequence[str] = (),
    ) -> None:
        self.connection = connection
        # every broker access made for a request (tools, tasks and their timelines,
        # watches, Events, resources) goes over its principal's connection where the operator
        # maps principals (use_principals), else over ``connection``
        self.acting = ActingConnection(connection)
        self.policies = ClientPolicies(mcp_policy(policy), workers_from_header=sessions_compete)
        server_policy = self.policies.policy
        self.tools = tool_definitions(server_policy)
        self.task_names = {server_policy.tool_name(o.name) for o in OPERATIONS.values() if o.waits}
        may_be_tasks = types.ToolExecution(task_support="optional")
        self.tools_for_tasks = [
            t.model_copy(update={"execution": may_be_tasks}) if t.name in self.task_names else t
            for t in self.tools
        ]
        super().__init__(
            SERVER_NAME,
            version=__version__,
            instructions=prefixed(INSTRUCTIONS, server_policy),
            on_list_tools=self.handle_list_tools,
            on_call_tool=self.handle_call_tool,
            on_list_resources=self.handle_list_resources,
            on_list_resource_templates=self.handle_list_templates,
            on_read_resource=self.handle_read_resource,
            on_list_prompts=self.handle_list_prompts,
            on_get_prompt=self.handle_get_prompt,
            on_completion=self.handle_complete,
        )
        # Logging through the protocol is 2025's (2026-07-28 dropped it, SEP-2577): a handler
        # added so, not given to the constructor, which warns of that for every server.
        self.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_logging_level)
        # The requestState a client echoes, opened (or refused) first: the handlers below see
        # only states this server sealed, for this client (``state_keys``: shared by replicas)
        self.middleware.append(questions.state_boundary(self.owner_of, SERVER_NAME, state_keys))
        self.middleware.append(questions.checked_input)  # before the task middleware: outer
        self.middleware.append(acting_middleware)  # what a request starts acts for it too
        # each principal's mailboxes its own, on every method naming one (mailbox_owners.py);
        # inside acting_middleware: its records are read and written as the principal
        self.mailbox_owners = MailboxOwners(
            self.acting, connection.request_timeout, agent_mailbox=server_policy.agent_mailbox
        )
        named = lambda name: operation_named(server_policy, name)  # noqa: E731
        self.middleware.append(OwnerBoundary(self.mailbox_owners, named))
        # every task's events kept in the mail store (tasks/stream, task_events.py): a task a
        # server started again finds there is taken up by resume_call
        timeout = connection.request_timeout + CALL_GRACE_SECONDS
        store = tasks.TaskStore(
            self.owner_of, connection=self.acting, timeout=timeout, resume=self.resume_call,
            scope_missing=lambda ctx, tool: scope_missing(ctx.request, tool, self.tool_prefix),
        )  # fmt: skip
        self.task_tool = store.tool_of  # the HTTP scope check reads a task's scope by its tool
        tasks.serve(self, store, self.start_call, self.wait_of)
        self.watches = watch.Watches(self.acting, timeout)
        # the streams and watches count per client: its worker names share its slice
        watch.serve(self, self.watches, self.policy_of, self.client_of_request)
        # MCP Events: mailbox arrivals polled, streamed or POSTed to a listed host
        reader = events.Reader(self.acting, self.watches.timeout)
        hosts = HostPolicy(webhook_hosts, knob="--webhook-hosts")
        self.webhooks = webhooks.Webhooks(reader, self.watches, hosts, self.owner_of)
        events.serve(
            self, reader, self.watches, self.policy_of, self.client_of_request,
            heartbeat_seconds=heartbeat_seconds, webhooks=self.webhooks,
        )  # fmt: skip

    def use_principals(self, principals: PrincipalConnections) -> None:
        """Each principal ``principals`` maps acts at the broker as itself; ``self.acting``'s
        ``aclose`` closes their connections too."""
        self.acting.principals = principals

    def policy_of(self, ctx: Ctx) -> ToolPolicy:
        """The client's policy, for a request that answers a bad worker name with an error."""
        try:
            return self.policies.of(ctx.request)
        except OperationError as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None

    def owner_of(self, ctx: Ctx) -> str:
        """The client of a request (``owners.py``), a bad worker name answered as an error."""
        try:
            return self.policies.owner_of(ctx.request)
        except OperationError as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None

    def client_of_request(self, ctx: Ctx) -> str:
        """The client whose slice a request's streams and watches count in."""
        return client_of(self.owner_of(ctx))

    def wait_of(self, params: types.CallToolRequestParams) -> float:
        """How long a call run as a task may wait: what it asks (``TASK_WAIT_CAP_MS``)."""
        return call_wait(self.policies.policy, params, TASK_WAIT_CAP_MS)

    async def run_call(
        self,
        policy: ToolPolicy,
        ctx: Ctx,
        params: types.CallToolRequestParams,
        progress: Progress | None = None,
        wait_cap_ms: int | None = None,
    ) -> types.CallToolResult:
        """One tool call of the client with ``policy``, logged with its request id
        (``wait_cap_ms``: the most it waits, None: the policy's cap)."""
        named = operation_named(policy, params.name)
        operation = named.name if named is not None else None
        principals = self.acting.principals
        try:  # a principal with no broker identity here is refused first, spending no key
            own = principals is not None and principals.acts_as_itself(ctx.request)
        except OperationError as exc:
            return error_result(str(exc))
        if named is not None and not arguments_valid(named, params.arguments):
            operation = None  # answered its arguments' error, carrying nothing: no key
        arguments = params.arguments
        refused = self.policies.spend_keys(ctx.request, operation, arguments, own_identity=own)
        if refused is not None:  # past its own share of idempotency keys (owners.py)
            return error_result(refused)
        keyed = self.policies.client_keys(ctx.request, operation, params.arguments)
        if keyed is not params.arguments:  # the client's key, never another's
            params = params.model_copy(update={"arguments": keyed})
        # its keys named to the broker, which bounds the share across replicas and starts
        naming = None if own else self.policies.key_naming(ctx.request)
        return await logged_call(
            self.acting, policy, params, ctx.request_id, progress, wait_cap_ms, naming
        )

    @property
    def tool_prefix(self) -> str:
        return self.policies.policy.tool_prefix

    async def handle_list_tools(self, ctx: Ctx, _params: Any) -> types.ListToolsResult:
        offered = tasks.offered(ctx.protocol_version)
        tools = self.tools_for_tasks if offered else self.tools
        if granted(ctx.request) is not None:  # only what the token's scopes may call
            tools = [t for t in tools if may_use_tool(ctx.request, t.name, self.tool_prefix)]
        return types.ListToolsResult(tools=tools)

    # The pydantic models validate the arguments (in call_operation), not jsonschema: they give
    # the same wording as the LangChain tools and accept what those accept.
    async def handle_call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> Any:
        try:
            policy = self.policies.of(ctx.request)
        except OperationError as exc:
            return error_result(str(exc))
        progress = progress_reporter(ctx)

        async def run(named: types.CallToolRequestParams) -> types.CallToolResult:
            return await self.run_call(policy, ctx, named, progress)

        operation = operation_named(policy, params.name)
        if operation is None or not operation.asks:
            return await run(params)
        return await questions.call_asking(ctx, params, run, policy.tool_name)

    def start_call(self, ctx: Ctx, params: types.CallToolRequestParams) -> tasks.Run | None:
        """A tool call run as a task (``tasks.serve``), or None for a tool never one."""
        if params.name not in self.task_names:
            return None
        try:
            policy = self.policies.of(ctx.request)
        except OperationError:  # answered by handle_call_tool, as a tool error
            return None

        async def run(named: types.CallToolRequestParams) -> types.CallToolResult:
            # a waiting agent call tells its states to the task's timeline (task_events.py);
            # it waits what it asks: its client polls the task, no request waits on it
            states = task_events.call_states()
            return await self.run_call(policy, ctx, named, states, TASK_WAIT_CAP_MS)

        async def as_task(ask: questions.Ask | None) -> types.CallToolResult:
            operation = operation_named(policy, params.name)
            if ask is None or operation is None or not operation.asks:
                return await run(params)
            result = await questions.call_asking(ctx, params, run, policy.tool_name, ask)
            return cast(types.CallToolResult, result)  # asked through the task: never input

        return as_task

    def resume_call(self, ctx: Ctx, found: TaskLog) -> tasks.Run | None:
        """What is left of a task found in the store that no process runs (a server started
        again): ``fetch_messages`` and ``check_call`` run again as they were (the group's
        unacked messages come back; a call's state is read again); ``call_agent`` and
        ``answer_call`` become a ``check_call`` of the call once its timeline told the call's
        task_id, else run again only under their ``idempotency_key`` (the agent is called once);
        anything else cannot be taken up (None)."""
        policy = self.policies.policy
        name = found.call.get("name")
        arguments = found.call.get("arguments")
        operation = operation_named(policy, name) if isinstance(name, str) else None
        if operation is None or not isinstance(arguments, dict):
            return None
        if operation.name in ("fetch_messages", "check_call"):
            params = types.CallToolRequestParams(name=str(name), arguments=arguments)
        elif operation.name in ("call_agent", "answer_call"):
            called = found.last.get(task_events.CALL_STATE, {}).get("task_id")
            if isinstance(called, str) and called:
                wait = arguments.get("wait_seconds", 0)
                params = types.CallToolRequestParams(
                    name=policy.tool_name("check_call"),
                    arguments={"task_id": called, "wait_seconds": wait},
                )
            elif arguments.get("idempotency_key"):
                params = types.CallToolRequestParams(name=str(name), arguments=arguments)
            else:
                return None
        else:
            return None
        return self.start_call(ctx, params)

    async def handle_list_templates(
        self, ctx: Ctx, _params: Any
    ) -> types.ListResourceTemplatesResult:
        readable = may_use(ctx.request, READ)  # each is read (scopes.METHOD_SCOPES)
        templates = resources.resource_templates() if readable else []
        return types.ListResourceTemplatesResult(resource_templates=templates)

    async def handle_list_resources(self, ctx: Ctx, _params: Any) -> types.ListResourcesResult:
        readable = may_use(ctx.request, READ)
        listed = resources.listed_resources(self.policies.policy) if readable else []
        return types.ListResourcesResult(resources=listed)

    async def handle_read_resource(self, ctx: Ctx, params: types.ReadResourceRequestParams) -> Any:
        policy = self.policy_of(ctx)

        async def call(tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
            named = types.CallToolRequestParams(name=policy.tool_name(tool), arguments=arguments)
            return await self.run_call(policy, ctx, named)

        return await resources.read_resource(self.acting, policy, str(params.uri), call)

    async def handle_complete(
        self, ctx: Ctx, params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        return await resources.complete(self.acting, self.policy_of(ctx), params)

    async def handle_list_prompts(self, ctx: Ctx, _params: Any) -> types.ListPromptsResult:
        prompts = resources.prompts(self.policies.policy)
        return types.ListPromptsResult(
            prompts=[p for p in prompts if may_use_prompt(ctx.request, p.name)]
        )

    async def handle_get_prompt(self, _ctx: Ctx, params: types.GetPromptRequestParams) -> Any:
        return resources.get_prompt(self.policies.policy, params.name, params.arguments)

    def get_capabilities(self, *args: Any, **kwargs: Any) -> types.ServerCapabilities:
        capabilities = super().get_capabilities(*args, **kwargs)
        version = kwargs.get("protocol_version")
        if version in MODERN_PROTOCOL_VERSIONS:
            capabilities.logging = None  # not in 2026-07-28
        # The tools, prompts and resources listed never change while the server runs (they
        # follow its options), so no list_changed is ever sent: none is declared. (At
        # 2026-07-28 the SDK declares them wherever subscriptions/listen is served.)
        for listed in (capabilities.tools, capabilities.prompts, capabilities.resources):
            if listed is not None:
                listed.list_changed = False
        if tasks.offered(version):
            capabilities.tasks = tasks.capability()
        # The Tasks extension's settings are an empty object, as SEP-2663 defines them: a
        # client checking them strictly (the MCP Inspector's ext-tasks) takes any other as the
        # extension not offered, while it still declares it on every request, and then cannot
        # read the task a waiting call answers. tasks/stream (draft SEP-2694) is served to
        # whoever negotiated the extension, with nothing added to it.
        if tasks.extension_offered(version):
            capabilities.extensions = {**(capabilities.extensions or {}), tasks.EXTENSION: {}}
        # Events: an extension at 2026-07-28; before, whose capabilities have no
        # extensions, in the experimental capabilities
        if version in MODERN_PROTOCOL_VERSIONS:
            capabilities.extensions = {**(capabilities.extensions or {}), events.EXTENSION: {}}
        else:
            capabilities.experimental = {
                **(capabilities.experimental or {}),
                events.EXTENSION: {},
            }
        return capabilities


def create_server(
    connection: Mq9Connection,
    policy: ToolPolicy | None = None,
    *,
    sessions_compete: bool = False,
    webhook_hosts: Sequence[str] = (),
    state_keys: Sequence[str] = (),
) -> Mq9McpServer:
    """An MCP server whose tools are the mq9 operations (``Mq9McpServer``; the name kept for
    the code that embeds it)."""
    return Mq9McpServer(
        connection, policy, sessions_compete=sessions_compete, webhook_hosts=webhook_hosts,
        state_keys=state_keys,
    )  # fmt: skip


async def acting_middleware(ctx: Ctx, call_next: CallNext) -> HandlerResult:
    """Server middleware: the broker accesses of a request, and of what it starts (a task, a
    watch, a webhook: asyncio tasks copy the context), act for its principal."""
    token = acting_for(ctx.request)
    try:
        return await call_next(ctx)
    finally:
        stop_acting(token)


async def set_logging_level(ctx: Ctx, _params: types.SetLevelRequestParams) -> types.EmptyResult:
    """``logging/setLevel``, in the revisions that have it: accepted. mq9-mcp sends its clients
    no log messages (its log goes to stderr), so no level holds any back."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        raise MCPError(types.METHOD_NOT_FOUND, "Method not found", ctx.method)
    return types.EmptyResult()


async def connect_early(connection: Mq9Connection) -> None:
    """Open the broker connection at start, so the log says at once whether it is reachable;
    a failure is only logged (tool calls open the connection again and report it themselves)."""
    where = redact(connection.server)
    try:
        with anyio.fail_after(connection.request_timeout + CALL_GRACE_SECONDS):
            await connection.run(lambda _client: anyio.lowlevel.checkpoint())
    except (Mq9Error, TimeoutError) as exc:
        text = explain(exc) if isinstance(exc, Mq9Error) else "timed out"
        log.warning(
            "mq9 broker at %s not reachable yet (%s); tool calls will retry", where, redact(text)
        )
    else:
        log.info("connected to the mq9 broker at %s", where)
