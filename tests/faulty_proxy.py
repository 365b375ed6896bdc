"""An HTTP proxy on loopback that forwards to the S3 test endpoint and injects faults.

With ``fail=0.2`` about one request in five is answered ``503 SlowDown`` (S3's own answer to an
overloaded prefix) without reaching the store; with ``delay`` a share of requests waits that long
first. The draw is seeded, so a run sees the same pattern each time it sends the same requests.
"""

from __future__ import annotations

import http.client
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FaultyProxy:
    """Forward every request to ``upstream``; fail (503) or delay a seeded share of them.

    ``counts`` holds ``requests``, ``failed`` and ``delayed`` as they happen.
    """

    def __init__(self, upstream: str, *, fail: float = 0.0, delay: float = 0.0, delay_share: float = 0.0, seed: int = 0):
        self.upstream = urlsplit(upstream)
        self.fail, self.delay, self.delay_share = fail, delay, delay_share
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "failed": 0, "delayed": 0}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultyProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _draw(self) -> tuple[bool, bool]:
        with self.lock:
            self.counts["requests"] += 1
            failed = self.rng.random() < self.fail
            delayed = not failed and self.rng.random() < self.delay_share
            self.counts["failed"] += failed
            self.counts["delayed"] += delayed
        return failed, delayed

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: the counts say what happened
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return out
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self) -> None:
                body = self._body()  # read even when failing: the connection stays usable
                failed, delayed = proxy._draw()
                if failed:
                    self._reply(503, [("Content-Type", "application/xml")], SLOW_DOWN)
                    return
                if delayed:
                    threading.Event().wait(proxy.delay)
                up = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if self.headers.get("Transfer-Encoding"):
                    headers["Content-Length"] = str(len(body))
                up.request(self.command, self.path, body=body or None, headers=headers)
                resp = up.getresponse()
                data = resp.read()
                up.close()
                if self.command == "HEAD":  # keep the object's length, not the empty body's
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in HOP_BY_HOP:
                            self.send_header(k, v)
                    self.end_headers()
                    return
                self._reply(resp.status, resp.getheaders(), data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler
