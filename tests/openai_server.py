"""A small OpenAI-compatible ``/v1/chat/completions`` server for tests, on 127.0.0.1.

It answers with whatever a Python `responder(request_json) -> str` returns, can fail the
first N requests with HTTP 500 or sleep before answering (to test retries and timeouts),
and records every request it received (headers included) for assertions. Not part of the
installed package.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class OpenAICompatibleServer:
    def __init__(self, responder: Callable[[dict[str, Any]], str], *, fail_first: int = 0, delay: float = 0.0,
                 drip: float = 0.0, fail_status: int = 500, fail_headers: dict[str, str] | None = None,
                 fail_message: str = "injected failure"):
        """`drip`: send the answer one byte every `drip` seconds; `fail_status`, `fail_headers`
        and `fail_message` shape the first `fail_first` answers (e.g. 429 with Retry-After)."""
        self.responder, self.fail_first, self.delay = responder, fail_first, delay
        self.drip, self.fail_status, self.fail_headers, self.fail_message = drip, fail_status, fail_headers or {}, fail_message
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if not server.drip or status != 200:
                    self.wfile.write(data)
                    return
                try:
                    for i in range(len(data)):
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        time.sleep(server.drip)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up: fine
                    pass

            def do_POST(self):
                if self.path.split("?")[0] != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server._lock:
                    server.requests.append({"body": body, "headers": dict(self.headers)})
                    failing = server.fail_first > 0
                    if failing:
                        server.fail_first -= 1
                if failing:
                    return self._send(server.fail_status, {"error": {"message": server.fail_message}}, server.fail_headers)
                if server.delay:
                    time.sleep(server.delay)
                content = server.responder(body)
                self._send(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                })

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "OpenAICompatibleServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
