"""The counting and the operator's endpoint (#73), in process: requests by command and
outcome, refusals by their class, latency buckets, and an endpoint that answers /metrics,
/healthz and /readyz and nothing else, whatever a client sends it."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mq9_broker.serving.meter import LATENCY_BOUNDS, RequestMeter, reason_of
from mq9_wire import protocol as p
from mq9_wire.metrics import MetricsUnavailable, OperatorEndpoint, operator_address
from mq9_wire.protocol.error_texts import err_mailbox_missing, err_message_too_large
from testbed.support.waiting import until

DEADLINE = 60.0  # a guard against hangs only


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class _Meter:
    def __init__(self, meter: RequestMeter, prefix: str) -> None:
        self.meter, self.prefix = meter, prefix

    def collect(self):
        return self.meter.families(self.prefix)


def _error(text: str) -> bytes:
    return p.encode(p.ERROR_REPLY.write(error=text))


def test_requests_are_counted_by_command_outcome_and_reason():
    meter = RequestMeter({"$mq9.AI.MSG.SEND.": "SEND", "$mq9.AI.MSG.FETCH.": "FETCH"})
    started = meter.started()
    meter.answered("$mq9.AI.MSG.SEND.", b'{"error":"","msg_id":7}', started)
    meter.answered("$mq9.AI.MSG.SEND.", b'{"error":"","msg_id":8}', started)
    meter.answered("$mq9.AI.MSG.SEND.", _error(err_mailbox_missing("a.b")), started)
    too_large = err_message_too_large(9, 1, 0, "its --max-payload")
    meter.answered("$mq9.AI.MSG.SEND.", _error(too_large), started)
    meter.answered("$mq9.AI.MSG.FETCH.", _error("words no class reads"), started)
    meter.answered("no such subject", b"not json", started)
    meter.refused("$mq9.AI.MSG.FETCH.", "too_many_waiting")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Meter(meter, "t"))
    got = _samples(registry)
    assert got[("t_requests_total", (("command", "SEND"), ("outcome", "ok")))] == 2
    assert got[("t_requests_total", (("command", "SEND"), ("outcome", "refused")))] == 2
    assert got[("t_refusals_total", (("command", "SEND"), ("reason", "mailbox_not_found")))] == 1
    assert got[("t_refusals_total", (("command", "SEND"), ("reason", "payload_too_large")))] == 1
    assert got[("t_refusals_total", (("command", "FETCH"), ("reason", "other")))] == 1
    assert got[("t_refusals_total", (("command", "FETCH"), ("reason", "too_many_waiting")))] == 1
    assert got[("t_refusals_total", (("command", "unknown"), ("reason", "other")))] == 1
    # every answer observed once, the buckets cumulative up to +Inf
    assert got[("t_request_duration_seconds_count", (("command", "SEND"),))] == 4
    assert got[("t_request_duration_seconds_bucket", (("command", "SEND"), ("le", "+Inf")))] == 4
    # the too-many-waiting refusal has no answer time: counted, not observed
    assert got[("t_request_duration_seconds_count", (("command", "FETCH"),))] == 1


def test_latency_lands_in_its_bucket():
    meter = RequestMeter({"x": "X"})
    now = meter.started()
    # an answer "started" 0.003 s ago lands at or below 0.005 and above 0.0025
    meter.answered("x", b'{"error":""}', now - 0.003)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Meter(meter, "t"))
    got = _samples(registry)
    bucket = {
        le: got[("t_request_duration_seconds_bucket", (("command", "X"), ("le", le)))]
        for le in ("0.0025", "0.005", "30.0")
    }
    assert bucket == {"0.0025": 0, "0.005": 1, "30.0": 1}
    assert len(LATENCY_BOUNDS) < 20  # bounded series per command


@pytest.mark.parametrize(
    "reply, reason",
    [
        (_error(err_mailbox_missing("x")), "mailbox_not_found"),
        (b"\xff\xfe", "other"),
        (b'{"error": 5}', "other"),
        (b"[]", "other"),
        (_error("mailbox 'evil\u202e' " + "x" * 10_000), "other"),
    ],
)
def test_reasons_are_a_bounded_set(reply, reason):
    assert reason_of(reply) == reason


@pytest.mark.parametrize(
    "text, found",
    [("9100", ("127.0.0.1", 9100)), ("0.0.0.0:0", ("0.0.0.0", 0)), ("[::1]:9", ("::1", 9)),
     (":9100", ("127.0.0.1", 9100))],
)  # fmt: skip
def test_operator_addresses(text, found):
    assert operator_address(text) == found


@pytest.mark.parametrize("text", ["", "host", "1:70000", "h:-1", "h:9x"])
def test_a_wrong_address_is_one_line(text):
    with pytest.raises(ValueError, match=r"^--metrics .*\[HOST:\]PORT") as caught:
        operator_address(text)
    assert "\n" not in str(caught.value)


async def _get(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), DEADLINE)
    except ConnectionResetError:  # closed with what was sent unread: nothing answered
        return b""
    finally:
        writer.close()


async def test_the_endpoint_answers_its_three_paths_and_nothing_else():
    registry = CollectorRegistry(auto_describe=False)
    meter = RequestMeter({"x": "X"})
    meter.answered("x", b'{"error":""}', meter.started())
    registry.register(_Meter(meter, "t"))
    why: list[str | None] = ["starting"]
    async with OperatorEndpoint("127.0.0.1", 0, registry, lambda: why[0]) as endpoint:
        port = endpoint.port
        scrape = await _get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert scrape.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b't_requests_total{command="X",outcome="ok"} 1.0' in scrape
        assert (await _get(port, b"GET /healthz HTTP/1.1\r\n\r\n")).endswith(b"\r\n\r\nok\n")
        not_ready = await _get(port, b"GET /readyz HTTP/1.0\r\n\r\n")
        assert not_ready.startswith(b"HTTP/1.1 503 ") and not_ready.endswith(b"starting\n")
        why[0] = None
        assert (await _get(port, b"GET /readyz?x=1 HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")
        head = await _get(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
        # the attacker's side: each answered with its status or dropped, the endpoint serves on
        assert (await _get(port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await _get(port, b"GET /../etc/passwd HTTP/1.1\r\n\r\n")).startswith(
            b"HTTP/1.1 404"
        )
        assert (await _get(port, b"\x16\x03\x01garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert await _get(port, b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n") == b""
        many = b"".join(b"X-H: " + b"v" * 1000 + b"\r\n" for _ in range(64))
        too_many = await _get(port, b"GET /metrics HTTP/1.1\r\n" + many + b"\r\n")
        assert too_many.startswith(b"HTTP/1.1 431")
        assert (await _get(port, b"GET /healthz HTTP/1.1\r\n\r\n")).endswith(b"ok\n")


async def test_a_slow_client_is_dropped_and_others_are_served_meanwhile():
    registry = CollectorRegistry(auto_describe=False)
    endpoint = OperatorEndpoint("127.0.0.1", 0, registry, lambda: None, read_deadline=0.5)
    async with endpoint:
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        slow_writer.write(b"GET /metr")  # and nothing more
        await slow_writer.drain()
        assert (await _get(endpoint.port, b"GET /healthz HTTP/1.1\r\n\r\n")).endswith(b"ok\n")
        assert await asyncio.wait_for(slow_reader.read(), DEADLINE) == b""  # dropped
        slow_writer.close()


async def test_connections_beyond_the_bound_are_closed_unanswered():
    registry = CollectorRegistry(auto_describe=False)
    endpoint = OperatorEndpoint("127.0.0.1", 0, registry, lambda: None, at_once=2)
    async with endpoint:
        held = [await asyncio.open_connection("127.0.0.1", endpoint.port) for _ in range(2)]
        health = b"GET /healthz HTTP/1.1\r\n\r\n"

        async def closed_unanswered() -> bool:
            return await _get(endpoint.port, health) == b""

        # once both are taken in, a third is closed unanswered
        await until(closed_unanswered, timeout=20, what="a third connection closed unanswered")
        for _, writer in held:
            writer.close()
        # the held ones end; the endpoint serves again
        answer = await until(
            lambda: _get(endpoint.port, health), timeout=20, what="an answer", every=0.05
        )
        assert answer.endswith(b"ok\n")


@pytest.mark.slow  # runs a Python process
def test_without_the_extra_asking_for_metrics_is_one_line(tmp_path):
    # prometheus_client made unimportable, as in an install without the metrics extra
    (tmp_path / "prometheus_client.py").write_text("raise ImportError('not installed')\n")
    code = (
        "from mq9_wire.metrics import MetricsUnavailable, need_prometheus\n"
        "try:\n    need_prometheus()\nexcept MetricsUnavailable as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert "\n" not in line and "'metrics' extra (prometheus-client)" in line
    assert issubclass(MetricsUnavailable, Exception)
