"""The wake tests' brokers and webhook receiver (tests/platform/wake/wake_world.py)."""

from tests.platform.wake.wake_world import lane, memory_lane, receiver

__all__ = ["lane", "memory_lane", "receiver"]
