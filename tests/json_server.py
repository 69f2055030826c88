"""One JSON-over-HTTP test server: a real ``ThreadingHTTPServer`` on 127.0.0.1 (an ephemeral port), in a
background thread while its ``with`` block runs. ``answer(path, body)`` turns each POSTed JSON body into
``(status, payload)``; an exception in it comes back as a 500 (never a hang). The scripted
OpenAI-compatible model (:mod:`openai_server`) and the leakage tests' plain Search-R1 retriever are built
on it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[str, Any], tuple[int, Any]]


class JsonServer:
    def __init__(self, answer: Answer) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(answer))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> JsonServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(answer: Answer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            try:
                status, payload = answer(self.path, json.loads(self.rfile.read(length) or b"{}"))
            except Exception as err:
                status, payload = 500, {"error": {"message": repr(err)}}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
