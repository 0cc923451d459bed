"""Fakes at the process and network boundary."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[None]:
    """Serve `server` on a thread for the block's duration, then shut it down and close it."""
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
