"""A loopback server speaking Ollama's and OpenAI's wire formats, for tests and benchmarks.

It answers ``POST /api/chat`` and ``GET /api/tags`` as Ollama documents them (``message``,
``done``, ``done_reason``, ``prompt_eval_count``, ``eval_count``, durations in ns; errors as
``{"error": "..."}``, 404 for a model that is not pulled), and ``POST /v1/chat/completions`` /
``GET /v1/models`` as OpenAI-compatible servers do. Each model has a behaviour: a reply (text or
a function of the request), a delay, or a fault (``http500``, ``malformed``, ``empty``,
``hang``). A request with ``stream: true`` is answered as the servers stream: Ollama's NDJSON
chunks, OpenAI's server-sent events (usage in a last chunk when ``stream_options`` asks,
then ``data: [DONE]``), ``token_delay`` apart; a client that closes mid-stream is counted in
``disconnects``. It listens on 127.0.0.1 only and stops with the context manager.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def decide_all(request: dict[str, Any], action: str = "BUY", confidence: float = 0.7) -> str:
    """A valid reply for the request's schema: the same decision for every asset asked."""
    schema = request.get("format") or {}
    rf = request.get("response_format") or {}
    schema = schema or rf.get("schema") or (rf.get("json_schema") or {}).get("schema") or {}
    one = {"action": action, "confidence": confidence, "reasoning": "stub"}
    trades = schema.get("properties", {}).get("trades")
    if trades is not None:  # a trades reply: the first assets, up to the limit
        labels = trades["items"]["properties"]["asset"]["enum"]
        return json.dumps({"trades": [{"asset": a, "action": action, "confidence": confidence}
                                      for a in labels[:trades.get("maxItems", len(labels))]]})
    if "action" in schema.get("properties", {}):
        return json.dumps(one)
    return json.dumps({asset: one for asset in schema.get("required", [])})


@dataclass
class Behaviour:
    reply: str | Callable[[dict[str, Any]], str] = decide_all
    delay: float = 0.0
    fault: str | None = None  # http500, malformed, empty, hang
    digest: str = "sha256:stub"
    reject_formats: tuple[str, ...] = ()  # response_format types answered with HTTP 500
    finish: str = "stop"  # done_reason / finish_reason: "length" for a reply cut by the limit
    thinking: str = ""  # Ollama's message.thinking (think: true)
    token_delay: float = 0.0  # streamed replies: seconds between chunks (a slow generation)


@dataclass
class StubServer:
    """``with StubServer({"llama3.2:3b": Behaviour()}) as s: s.url``"""

    models: dict[str, Behaviour] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnects: int = 0  # streamed replies the client closed before their end

    def __enter__(self) -> StubServer:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # headers and body leave in one write (no delayed-ACK stalls)
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, raw: bool = False) -> None:
                data = body.encode() if raw else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _chunks(self, pieces: list[bytes], content_type: str, delay: float) -> None:
                """A chunked 200 response, one chunk per piece, ``delay`` apart; a client
                that closes the connection mid-way is counted in ``disconnects``."""
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    self.wfile.flush()
                    for piece in pieces:
                        time.sleep(delay)
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    stub.disconnects += 1
                    self.close_connection = True
                    self.wfile = io.BytesIO()  # the handler's last flush has nowhere to go

            def _stream_reply(self, req: dict[str, Any], b: Behaviour, text: str,
                              ollama: bool) -> None:
                model = req.get("model")
                parts = [text[i:i + 16] for i in range(0, len(text), 16)] or [""]
                if ollama:
                    lines = [{"model": model, "created_at": "2026-01-01T00:00:00Z",
                              "message": {"role": "assistant", "content": "",
                                          "thinking": b.thinking}, "done": False}] \
                        if b.thinking else []
                    lines += [{"model": model, "created_at": "2026-01-01T00:00:00Z",
                               "message": {"role": "assistant", "content": p}, "done": False}
                              for p in parts]
                    lines.append({"model": model, "created_at": "2026-01-01T00:00:00Z",
                                  "message": {"role": "assistant", "content": ""},
                                  "done": True, "done_reason": b.finish,
                                  "total_duration": int(b.delay * 1e9), "load_duration": 0,
                                  "prompt_eval_count": 42, "prompt_eval_duration": 1,
                                  "eval_count": 17, "eval_duration": 1})
                    self._chunks([json.dumps(x).encode() + b"\n" for x in lines],
                                 "application/x-ndjson", b.token_delay)
                    return
                def event(choices: list[Any], **extra: Any) -> bytes:
                    return b"data: " + json.dumps({
                        "id": "stub", "object": "chat.completion.chunk", "created": 0,
                        "model": model, "choices": choices, **extra}).encode() + b"\n\n"
                events = [event([{"index": 0, "delta": {"role": "assistant", "content": p},
                                  "finish_reason": None}]) for p in parts]
                events.append(event([{"index": 0, "delta": {}, "finish_reason": b.finish}]))
                if (req.get("stream_options") or {}).get("include_usage"):
                    events.append(event([], usage={"prompt_tokens": 42,
                                                   "completion_tokens": 17,
                                                   "total_tokens": 59}))
                events.append(b"data: [DONE]\n\n")
                self._chunks(events, "text/event-stream", b.token_delay)

            def do_GET(self) -> None:
                if self.path == "/api/tags":
                    self._send(200, {"models": [
                        {"name": m, "model": m, "modified_at": "2026-01-01T00:00:00Z",
                         "size": 1, "digest": b.digest, "details": {"format": "gguf"}}
                        for m, b in stub.models.items()]})
                elif self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "owned_by": "stub"} for m in stub.models]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                try:
                    req = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._send(400, {"error": "invalid JSON"})
                    return
                stub.requests.append({"path": self.path, "body": req,
                                      "auth": self.headers.get("Authorization")})
                model = req.get("model")
                b = stub.models.get(model)
                ollama = self.path == "/api/chat"
                if b is None:
                    msg = f'model "{model}" not found, try pulling it first'
                    self._send(404, {"error": msg} if ollama else
                               {"error": {"message": msg, "type": "not_found"}})
                    return
                fmt = (req.get("response_format") or {}).get("type")
                if fmt in b.reject_formats:  # as llama.cpp's server does for json_schema
                    self._send(500, {"error": {"message": f"1 validation error: ('body', "
                                                          f"'response_format', 'type') {fmt}",
                                               "type": "internal_server_error"}})
                    return
                if b.fault == "hang":
                    time.sleep(60)
                time.sleep(b.delay)
                if b.fault == "http500":
                    self._send(500, {"error": "internal error"})
                    return
                if b.fault == "malformed":
                    self._send(200, "{not json", raw=True)
                    return
                text = "" if b.fault == "empty" else (
                    b.reply(req) if callable(b.reply) else b.reply)
                if req.get("stream") and (ollama or self.path == "/v1/chat/completions"):
                    self._stream_reply(req, b, text, ollama)
                elif ollama:
                    self._send(200, {
                        "model": model, "created_at": "2026-01-01T00:00:00Z",
                        "message": {"role": "assistant", "content": text,
                                    **({"thinking": b.thinking} if b.thinking else {})},
                        "done": True, "done_reason": b.finish, "total_duration": int(b.delay * 1e9),
                        "load_duration": 0, "prompt_eval_count": 42,
                        "prompt_eval_duration": 1, "eval_count": 17, "eval_duration": 1})
                elif self.path == "/v1/chat/completions":
                    self._send(200, {
                        "id": "stub", "object": "chat.completion", "created": 0,
                        "model": model, "choices": [{"index": 0, "finish_reason": b.finish,
                                                     "message": {"role": "assistant",
                                                                 "content": text}}],
                        "usage": {"prompt_tokens": 42, "completion_tokens": 17,
                                  "total_tokens": 59}})
                else:
                    self._send(404, {"error": "not found"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
