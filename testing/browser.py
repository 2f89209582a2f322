"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for the web
view's test: open a page, evaluate JavaScript in it, take a screenshot. Stopped by pid."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import requests
import websocket

from testing.harness import free_port, stop_process, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Browser:
    def __init__(self, workdir: Path, width: int = 1280, height: int = 800) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        with open(workdir / "chromium.log", "wb") as log:
            self.proc = subprocess.Popen(
                [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                 "--no-first-run", "--disable-extensions", f"--user-data-dir={workdir}",
                 "--remote-debugging-address=127.0.0.1",
                 f"--remote-debugging-port={self.port}", f"--window-size={width},{height}",
                 "about:blank"], stdout=log, stderr=subprocess.STDOUT)
        self._ids = itertools.count(1)
        try:
            page = wait_until(self._page, 30, what="Chromium's DevTools endpoint")
            self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=15)
        except BaseException:
            stop_process(self.proc)
            raise

    def _page(self) -> dict | None:
        try:
            targets = requests.get(f"http://127.0.0.1:{self.port}/json/list", timeout=2).json()
        except requests.RequestException:
            return None
        return next((t for t in targets if t.get("type") == "page"), None)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def call(self, method: str, **params: Any) -> dict:
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (None if it threw)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return None if "exceptionDetails" in result else result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot",
                                                    format="png")["data"]))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            stop_process(self.proc)
