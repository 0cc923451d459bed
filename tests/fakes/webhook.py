"""A fake webhook endpoint on loopback: records each POST; can answer 500s or hang first."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.fakes import serving


class FakeWebhook:
    def __init__(self, fail_first: int = 0, status: int = 500, hang: float = 0.0):
        self.received: list[dict] = []
        self.attempts = 0
        self.fail_first, self.status, self.hang = fail_first, status, hang
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                with fake._lock:
                    fake.attempts += 1
                    n = fake.attempts
                if fake.hang:
                    time.sleep(fake.hang)
                if n <= fake.fail_first:
                    self.send_response(fake.status)
                    self.end_headers()
                    return
                with fake._lock:
                    fake.received.append(json.loads(raw))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    @contextmanager
    def running(self):
        with serving(self.server):
            yield self
