"""The tracing tests' exporter and tracer (tests/platform/tracing/tracing_world.py)."""

from tests.platform.tracing.tracing_world import spans, tracer

__all__ = ["spans", "tracer"]
