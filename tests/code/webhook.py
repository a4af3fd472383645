"""A webhook receiver on loopback for alert tests: it records every POST's path and JSON body."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver(ThreadingHTTPServer):
    def __init__(self):
        self.received: list[tuple[str, dict]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(handler):  # noqa: N802 (http.server's name)
                body = handler.rfile.read(int(handler.headers["Content-Length"]))
                self.received.append((handler.path, json.loads(body)))
                handler.send_response(200)
                handler.end_headers()

            def log_message(handler, *args):  # quiet
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def bodies(self, path: str) -> list[dict]:
        return [body for where, body in self.received if where == path]


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        yield receiver
    finally:
        receiver.shutdown()
        receiver.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
