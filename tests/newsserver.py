"""A local HTTP server for news-source tests: serves the fixtures of tests/data/news on 127.0.0.1.

Routes map a path (plus ``?after=CURSOR`` for Reddit pages) to a list of replies served in turn, the
last one repeated, so a test can script "503, then the page".  Every request is logged in ``hits``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

NEWS = Path(__file__).resolve().parent / "data" / "news"


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def fixture(name: str, content_type: str | None = None, **headers: str) -> Reply:
    """A 200 reply with the bytes of tests/data/news/NAME."""
    kind = content_type or ("application/json" if name.endswith(".json") else "application/rss+xml")
    return Reply(200, (NEWS / name).read_bytes(), {"Content-Type": kind, **headers})


class NewsServer:
    def __init__(self, routes: dict[str, list[Reply] | Reply]) -> None:
        self.routes = {k: (v if isinstance(v, list) else [v]) for k, v in routes.items()}
        self.hits: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                after = parse_qs(parts.query).get("after", [None])[0]
                key = parts.path + (f"?after={after}" if after else "")
                with server._lock:
                    server.hits.append(self.path)
                    replies = server.routes.get(key)
                    reply = (replies.pop(0) if len(replies) > 1 else replies[0]) if replies else Reply(404, b"")
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path


@contextlib.contextmanager
def news_server(routes: dict[str, list[Reply] | Reply]) -> Iterator[NewsServer]:
    """A `NewsServer` running in a thread for the duration of the block."""
    server = NewsServer(routes)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(timeout=5)


def standard_routes() -> dict[str, list[Reply] | Reply]:
    """The paged RSS feed, the Atom feed, two Reddit pages and the broken documents."""
    return {
        "/news/desk-page1.xml": fixture("desk-page1.xml"),
        "/news/desk-page2.xml": fixture("desk-page2.xml"),
        "/news/atom.xml": fixture("atom.xml", "application/atom+xml"),
        "/news/desk-broken.xml": fixture("desk-broken.xml"),
        "/r/Bitcoin/new.json": fixture("reddit-page1.json"),
        "/r/Bitcoin/new.json?after=t3_18ugc03": fixture("reddit-page2.json"),
        "/r/Broken/new.json": fixture("reddit-broken.json"),
    }
