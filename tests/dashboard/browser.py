"""A dashboard served by uvicorn in a thread and a real headless Chromium (Debian's `chromium`) driven by
Playwright; screenshots go to `.brain/screenshots/` at the repository root (not committed)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI

from tests import servers

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / ".brain" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """`app` on a free port of 127.0.0.1 until the block exits; yields its base URL."""
    import uvicorn

    port = servers.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the dashboard server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A Playwright browser over the system Chromium (Playwright's own download cannot reach the internet)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise AssertionError(f"{CHROMIUM} not found: `make servers` installs Debian's chromium (as root)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: object, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
