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
    def __init__(self, responder: Callable[[dict[str, Any]], str], *, fail_first: int = 0, delay: float = 0.0):
        self.responder, self.fail_first, self.delay = responder, fail_first, delay
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server._lock:
                    server.requests.append({"body": body, "headers": dict(self.headers)})
                    failing = server.fail_first > 0
                    if failing:
                        server.fail_first -= 1
                if failing:
                    return self._send(500, {"error": {"message": "injected failure"}})
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
