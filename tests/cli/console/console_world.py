"""A console under test: the RobustMQ-shaped listener (testbed/support/robustmq_shaped.py) serving
the
bundled engine, the console's application on uvicorn on loopback, and a client of the test's
own, all on one event loop in a thread of their own, so a test drives a browser (blocking) and
reaches the broker with ``world.run(coroutine)``. And the headless Chromium that drives it."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from mq9_broker import BrokerEngine
from mq9_cli.console.app import Settings, create_app
from mq9_platform import Mq9Client
from testbed.ports import unclaimed_port
from testbed.support.robustmq_shaped import RobustMQShapedListener
from testbed.support.waiting import until

TOKEN = "console-test-token-0123456789"
ROOT = Path(__file__).resolve().parents[3]
# The screenshots each run keeps (git-ignored): MQ9_CONSOLE_SCREENSHOTS moves them.
SHOTS = Path(os.environ.get("MQ9_CONSOLE_SCREENSHOTS", ROOT / "console-screenshots"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


class World:
    """``engine``: the bundled engine to serve (one with smaller ``BrokerLimits``, say);
    the rest are the console's ``Settings``."""

    def __init__(self, engine: BrokerEngine | None = None, **settings: Any) -> None:
        self.engine = engine
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""
        self.client: Mq9Client | None = None

    def run(self, coroutine: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __enter__(self) -> World:
        self.thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.run(self._stop())
        except TimeoutError:
            print(
                self._stacks(), file=sys.stderr
            )  # where the stop hung: the next look starts there
            raise
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def _stacks(self) -> str:
        """Every task of the world's loop and where it waits."""
        lines = []
        for task in asyncio.all_tasks(self.loop):
            frames = [
                f"{f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}" for f in task.get_stack()
            ]
            lines.append(f"{task.get_name()}: " + " <- ".join(reversed(frames)))
        return "\n".join(lines)

    async def _start(self) -> None:
        self.listener = RobustMQShapedListener(self.engine or BrokerEngine(search=False))
        await self.listener.__aenter__()
        # Generous timeouts, hang guards only: the first REGISTER loads the embedding model
        self.client = await Mq9Client(self.listener.url, request_timeout=60).connect()
        options = {"sample_seconds": 0.3, "poll_seconds": 0.2, **self.settings}
        settings = Settings(token=TOKEN, server=self.listener.url, **options)
        app = create_app(lambda: Mq9Client(self.listener.url, request_timeout=60), settings)
        port = unclaimed_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.serving = asyncio.ensure_future(self.server.serve())

        def started() -> bool:
            if self.serving.done():
                self.serving.result()  # it failed to start: say why
            return self.server.started

        await until(started, timeout=60, what="the console serving", every=0.05)
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.serving, 30)
        assert self.client is not None
        await self.client.close()
        await self.listener.__aexit__(None, None, None)


def browser() -> Any:
    """Debian's chromium, headless, through Debian's chromedriver (nothing downloaded); the
    test is skipped, saying why, where either is missing."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(
            f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
            "apt-get install -y chromium chromium-driver (.ci/run does, as root)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (dev extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    return driver


def shoot(driver: Any, name: str) -> Path:
    """A screenshot of the page as it is, kept as ``<SHOTS>/<name>.png``."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
