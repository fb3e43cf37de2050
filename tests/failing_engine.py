"""A stand-in llama-server whose generations fail inside the stream, as a real engine's can.

llama-server answers a streamed request with 200 and its first token before the work is done;
when the generation then fails (a slot error, an allocation failure, the context running out in
engines that check late) the failure arrives as one ``data: {"error": {...}}`` event in the
stream. The real engine cannot be made to fail on demand, so this process plays it: it takes
llama-server's argv (``--port``, ``--list-devices``), answers ``/health``, ``/props`` and
``/tokenize``, and streams one token then that error event for every completion. The server,
gateway and CLI in front of it are the real ones.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERROR = {"code": 500, "message": "failed to decode the batch: KV cache is full (stand-in)", "type": "server_error"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        print(format % args, flush=True)

    def _json(self, data: object) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._json({"status": "ok"})
        elif self.path == "/props":
            self._json({"default_generation_settings": {"n_ctx": 4096}})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/tokenize":
            self._json({"tokens": list(range(len(str(request.get("content", "")).split())))})
            return
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            self.send_error(404)
            return
        chat = self.path.endswith("chat/completions")
        first = {"choices": [{"delta": {"content": "Once"}} if chat else {"text": "Once"}], "object": "chunk"}
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for event in (first, {"error": ERROR}):
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
        self.close_connection = True


def main(argv: list[str]) -> None:
    if "--list-devices" in argv:
        print("Available devices:")
        return
    port = int(argv[argv.index("--port") + 1])
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
