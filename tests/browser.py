"""Headless Chromium driven through the DevTools protocol (the `websockets` client Prefect already
depends on): open a page, click a tab by its text, read the page's text, take a screenshot."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import websockets

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """A headless Chromium process with one page; use as a context manager."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        self.port, self.profile = _free_port(), tempfile.mkdtemp(prefix="chromium-")
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--window-size={width},{height}",
                f"--remote-debugging-port={self.port}",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.ids = itertools.count(1)

    def __enter__(self) -> Browser:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                pages = httpx.get(f"http://127.0.0.1:{self.port}/json", timeout=2).json()
                self.socket_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
                return self
            except (httpx.HTTPError, StopIteration):
                time.sleep(0.5)
        raise RuntimeError("headless Chromium did not start")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)

    def _call(self, method: str, **params: object) -> dict:
        async def call() -> dict:
            async with websockets.connect(self.socket_url, max_size=2**26) as ws:
                ident = next(self.ids)
                await ws.send(json.dumps({"id": ident, "method": method, "params": params}))
                while True:
                    message = json.loads(await ws.recv())
                    if message.get("id") == ident:
                        return message.get("result", {})

        return asyncio.run(call())

    def evaluate(self, expression: str) -> object:
        result = self._call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def open(self, url: str) -> None:
        self._call("Page.navigate", url=url)

    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def wait_for_text(self, wanted: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if wanted in (text := self.text()):
                return text
            time.sleep(0.5)
        raise AssertionError(f"{wanted!r} never appeared; the page shows: {self.text()[:2000]}")

    def click_text(self, label: str) -> bool:
        """Click the innermost visible element whose text is exactly `label`."""
        script = (
            "(() => { const all = [...document.querySelectorAll('li, button, a, [role=tab], span, div')];"
            f" const hit = all.reverse().find(e => e.innerText && e.innerText.trim() === {json.dumps(label)}"
            " && e.offsetParent !== null); if (hit) { hit.click(); return true; } return false; })()"
        )
        return bool(self.evaluate(script))

    def screenshot(self, path: Path) -> Path:
        data = self._call("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)
