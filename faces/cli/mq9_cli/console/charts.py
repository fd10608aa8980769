"""The console's pictures, drawn here as SVG text: a mailbox's depth over time, and a call's
timeline across the caller's and the agent's mailboxes. Every word in them (an address, a
step, a trace id) is escaped: they are served as images, and a name may be anyone's."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from html import escape

from ..overview import Event
from ..render import printable

WIDTH, HEIGHT, PAD = 640, 200, 40
KEPT_SAMPLES = 720  # per mailbox: an hour at one sample each 5 s


class DepthHistory:
    """How many messages each mailbox held, when: what the console saw at each look."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._samples: dict[str, deque[tuple[float, int]]] = {}
        self._lower: dict[str, deque[bool]] = {}  # each sample: a lower bound (N+)

    def add(self, address: str, depth: int, lower: bool = False) -> None:
        kept = self._samples.setdefault(address, deque(maxlen=KEPT_SAMPLES))
        kept.append((self.clock(), depth))
        self._lower.setdefault(address, deque(maxlen=KEPT_SAMPLES)).append(lower)

    def lower(self, address: str) -> bool:
        """Whether the picture's top (its largest sample) is a lower bound, as its page says."""
        samples, lower = self.samples(address), list(self._lower.get(address, ()))
        top = max((d for _, d in samples), default=0)
        return any(b for (_, d), b in zip(samples, lower, strict=False) if d == top)

    def samples(self, address: str) -> list[tuple[float, int]]:
        return list(self._samples.get(address, ()))

    def lower_now(self, address: str) -> bool:
        """Whether the last sample (the picture's "now") is a lower bound."""
        lower = self._lower.get(address)
        return bool(lower and lower[-1])


def _text(x: float, y: float, words: str, anchor: str = "start", size: int = 11) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
        f'font-family="sans-serif">{escape(printable(words))}</text>'
    )


def _svg(body: Iterable[str], title: str, height: int = HEIGHT, width: int = WIDTH) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><title>{escape(printable(title))}</title>'
        f'<rect width="{width}" height="{height}" fill="#fff"/>' + "".join(body) + "</svg>"
    )


def depth_chart(
    address: str,
    samples: list[tuple[float, int]],
    *,
    capped: int | None = None,
    lower: bool = False,
    lower_now: bool = False,
) -> str:
    """Depth over time as a line; its top drawn "N+" when it is a lower bound (``lower``, as
    the mailbox's page says it), or at least ``capped``; and the depth now, the last sample's
    (``lower_now``: a lower bound), which the top may exceed (a look while mail came and
    went)."""
    title = f"messages in {address} over time"
    if not samples:
        return _svg([_text(WIDTH / 2, HEIGHT / 2, "no samples yet", "middle")], title)
    t0, t1 = samples[0][0], max(samples[-1][0], samples[0][0] + 1)
    top = max(max(d for _, d in samples), 1)
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD

    def xy(t: float, depth: int) -> str:
        x = PAD + (t - t0) / (t1 - t0) * inner_w
        y = HEIGHT - PAD - depth / top * inner_h
        return f"{x:.1f},{y:.1f}"

    points = " ".join(xy(t, d) for t, d in samples)
    shown_top = f"{top}+" if lower or (capped is not None and top >= capped) else str(top)
    now = samples[-1][1]
    now_lower = lower_now or (capped is not None and now >= capped)
    shown_now = f"now {now}+" if now_lower else f"now {now}"
    body = [
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        'stroke="#888888"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#888888"/>',
        f'<polyline points="{points}" fill="none" stroke="#2563eb" stroke-width="2"/>',
        _text(PAD - 4, PAD + 4, shown_top, "end"),
        _text(PAD - 4, HEIGHT - PAD + 4, "0", "end"),
        _text(PAD, HEIGHT - PAD + 16, time.strftime("%H:%M:%S", time.gmtime(t0))),
        _text(WIDTH - PAD, HEIGHT - PAD + 16, time.strftime("%H:%M:%S", time.gmtime(t1)), "end"),
        _text(WIDTH / 2, 16, title, "middle", 12),
        _text(WIDTH - PAD, PAD - 8, shown_now, "end"),
    ]
    return _svg(body, title)


def sparkline(address: str, samples: list[tuple[float, int]]) -> str:
    """Depth over time as a bare line, 160 by 40, for a table's row."""
    width, height = 160, 40
    title = f"messages in {address} over time"
    if len(samples) < 2:
        return _svg([], title, height, width)
    t0, t1 = samples[0][0], max(samples[-1][0], samples[0][0] + 1)
    top = max(max(d for _, d in samples), 1)
    points = " ".join(
        f"{2 + (t - t0) / (t1 - t0) * (width - 4):.1f},{height - 2 - d / top * (height - 4):.1f}"
        for t, d in samples
    )
    line = f'<polyline points="{points}" fill="none" stroke="#2563eb" stroke-width="1.5"/>'
    return _svg([line], title, height, width)


LANES = ("caller", "agent")


def timeline_chart(task_id: str, events: list[Event]) -> str:
    """Each step of a call on the lane of the mailbox it was seen in, left to right in time;
    steps of one trace share its colour, and the trace id is written beside the first."""
    title = f"call {task_id} across agents"
    height = 90 + 60 * len(LANES)
    if not events:
        return _svg([_text(WIDTH / 2, height / 2, "no steps seen", "middle")], title, height)
    t0 = min(e.time for e in events)
    t1 = max(max(e.time for e in events), t0 + 1)
    colours = ["#2563eb", "#16a34a", "#dc2626", "#9333ea"]
    traces = list(dict.fromkeys(e.trace_id for e in events if e.trace_id))
    body = [_text(WIDTH / 2, 16, title, "middle", 12)]
    for row, lane in enumerate(LANES):
        y = 50 + 60 * row
        body.append(_text(8, y + 4, lane))
        body.append(f'<line x1="70" y1="{y}" x2="{WIDTH - 20}" y2="{y}" stroke="#ccc"/>')
    placed: dict[tuple[str, int], int] = {}
    for event in events:
        row = LANES.index(event.lane) if event.lane in LANES else 0
        x = 80 + (event.time - t0) / (t1 - t0) * (WIDTH - 120)
        stack = placed.get((event.lane, event.time), 0)
        placed[(event.lane, event.time)] = stack + 1
        y = 50 + 60 * row
        colour = colours[traces.index(event.trace_id) % 4] if event.trace_id else "#555555"
        body.append(f'<circle cx="{x:.1f}" cy="{y}" r="5" fill="{colour}"/>')
        right = x > WIDTH * 0.6  # a label near the right edge reads leftwards
        label_x = x - 7 if right else x + 7
        body.append(_text(label_x, y - 8 - 12 * stack, event.what, "end" if right else "start"))
    for n, trace in enumerate(traces):
        body.append(_text(8, height - 20 + 0 * n - 14 * (len(traces) - 1 - n), f"trace {trace}"))
    body.append(_text(80, height - 4, time.strftime("%H:%M:%S", time.gmtime(t0))))
    body.append(_text(WIDTH - 20, height - 4, time.strftime("%H:%M:%S", time.gmtime(t1)), "end"))
    return _svg(body, title, height)
