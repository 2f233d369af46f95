"""NodeBackend: an embedded GGUF model run by node-llama-cpp in a sidecar process.

node-llama-cpp (npm) ships llama.cpp prebuilt for Linux, macOS and Windows (CPU variants from
SSE4.2 to AVX-512 chosen at run time), so nothing is compiled: ``scripts/setup.sh`` runs ``npm
install`` in ``agents/llm/node``. The member's ``binding: node-llama-cpp`` selects
it. One sidecar (``agents/llm/node/sidecar.mjs``) per member holds its model; requests and
replies are JSON lines on the sidecar's stdin and stdout, one chat at a time in arrival order.

Deadlines, as for the in-process binding: a chat whose deadline passes is cancelled in the
sidecar; one still queued never starts (``not_started``), one generating stops at its next
token (``aborted``), or with ``abort_at_deadline: false`` runs on and its tokens after the
deadline are counted (``tokens_after_deadline``). The reply grammar is node-llama-cpp's JSON
schema grammar with its indentation rules replaced by one optional space (a small model would
otherwise spend its token budget on newlines); the chat template is the GGUF file's own where it
carries one, else node-llama-cpp's wrapper for the model family.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ffe_agents.llm.backends import (
    BackendCounters,
    BackendError,
    LocalModel,
    Reply,
    embedded_model_path,
    file_digest,
)
from ffe_agents.llm.config import MemberConfig

SIDECAR_DIR = Path(__file__).parent / "node"
RUNTIME_FILES = ("node/sidecar.mjs", "node/package.json")  # part of an LLM job's identity


def binding_version() -> str:
    """``node-llama-cpp==<version>`` as pinned in the sidecar's package.json."""
    pinned = json.loads((SIDECAR_DIR / "package.json").read_text())["dependencies"]
    return f"node-llama-cpp=={pinned['node-llama-cpp']}"


def sidecar_available() -> str | None:
    """None when the sidecar can start here, else what is missing."""
    if shutil.which("node") is None:
        return "node (Node.js >= 20) is not on PATH"
    if not (SIDECAR_DIR / "node_modules" / "node-llama-cpp").is_dir():
        return (f"node-llama-cpp is not installed in {SIDECAR_DIR} (run scripts/setup.sh, or "
                f"npm install there)")
    return None


class NodeBackend(LocalModel):
    """An embedded model in a node-llama-cpp sidecar; the interface of ``EmbeddedBackend``."""

    def __init__(self, member: MemberConfig, model_dir: str | Path = "runs/models") -> None:
        self.member = member
        self.model_dir = model_dir
        self.digest: str | None = None
        self.info: dict[str, Any] = {}
        self.counters = BackendCounters()
        self._proc: subprocess.Popen | None = None
        self._start_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._ids = itertools.count(1)
        self._stderr = None
        self._reader: threading.Thread | None = None
        self._accounting: list[threading.Event] = []

    # ------------------------------------------------------------------ the process
    def _load(self) -> None:
        """Start the sidecar and load the model (once; again after the process died)."""
        with self._start_lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            missing = sidecar_available()
            if missing:
                raise BackendError("unavailable", missing)
            path = embedded_model_path(self.member.model, self.model_dir)
            self.digest = file_digest(path)
            self._stderr = tempfile.TemporaryFile()
            self._proc = subprocess.Popen(
                ["node", str(SIDECAR_DIR / "sidecar.mjs")], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)
            self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True,
                                            name=f"node-sidecar-{self.member.name}")
            self._reader.start()
            reply = self._request({"op": "load", "model": str(Path(path).resolve()),
                                   "context": self.member.context,
                                   "threads": self.member.threads}).result(timeout=300)
            if not reply.get("ok"):
                self.close()
                raise BackendError("unavailable", f"{self.member.name}: the sidecar could not "
                                                  f"load {path}: {reply.get('error')}")
            self.info = {k: reply.get(k) for k in ("binding", "version", "llama_cpp",
                                                   "template")}

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue  # nothing but replies is written there; a stray line is dropped
            fut = self._pending.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        proc.ffe_exited = True  # requests sent from now on fail at once (see _request)
        err = self._stderr_text()
        for fut in list(self._pending.values()):  # the process ended: nobody will answer
            if not fut.done():
                fut.set_result({"ok": False, "error": f"the sidecar exited: {err[-500:]}"})
        self._pending.clear()

    def _stderr_text(self) -> str:
        try:
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace")
        except (AttributeError, OSError, ValueError):
            return ""

    def _request(self, msg: dict[str, Any]) -> concurrent.futures.Future:
        rid = next(self._ids)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.rid = rid  # type: ignore[attr-defined]
        self._pending[rid] = fut
        self._send({"id": rid, **msg})
        proc = self._proc
        if (proc is None or getattr(proc, "ffe_exited", False)) and not fut.done():
            self._pending.pop(rid, None)
            fut.set_result({"ok": False, "error": "the sidecar exited: "
                                                  f"{self._stderr_text()[-500:]}"})
        return fut

    def _send(self, msg: dict[str, Any]) -> None:
        proc = self._proc
        try:
            with self._write_lock:
                proc.stdin.write(json.dumps(msg) + "\n")
                proc.stdin.flush()
        except (AttributeError, OSError, ValueError) as exc:
            fut = self._pending.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result({"ok": False, "error": f"the sidecar is gone ({exc})"})

    # ------------------------------------------------------------------ the interface
    async def health(self, timeout: float = 5.0) -> str | None:
        await asyncio.to_thread(self._load)
        return self.digest

    def count_tokens(self, text: str) -> int | None:
        """Exact prompt length with the model's tokenizer (None until it is loaded)."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        try:
            reply = self._request({"op": "tokenize", "text": text}).result(timeout=10)
        except concurrent.futures.TimeoutError:
            return None
        return int(reply["n"]) if reply.get("ok") else None

    def options(self) -> dict[str, Any]:
        m = self.member
        return {"temperature": m.temperature, "seed": m.seed, "max_tokens": m.max_tokens,
                "n_ctx": m.context, "binding": binding_version()}

    async def chat(self, messages: list[dict[str, str]], schema: dict[str, Any],
                   timeout: float, max_tokens: int | None = None) -> Reply:
        t0 = time.perf_counter()
        await asyncio.to_thread(self._load)
        m = self.member
        fut = self._request({"op": "chat", "messages": list(messages), "schema": schema,
                             "max_tokens": max_tokens or m.max_tokens,
                             "temperature": m.temperature, "seed": m.seed})
        remaining = max(timeout - (time.perf_counter() - t0), 0.0)
        try:
            reply = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), remaining)
        except (TimeoutError, asyncio.CancelledError):
            # stop it in the sidecar: never started if queued, stopped at its next token
            # (or left running and counted, abort_at_deadline: false)
            self._send({"id": next(self._ids), "op": "cancel", "target": fut.rid,
                        "abort": m.abort_at_deadline})
            counted = threading.Event()
            self._accounting.append(counted)
            fut.add_done_callback(lambda f: (self._count_cancelled(f), counted.set()))
            raise
        if not reply.get("ok"):
            raise BackendError("bad_reply", f"{m.name}: {reply.get('error')}")
        if reply.get("finish") in ("abort", "not_started"):  # cancelled by another path
            raise BackendError("timeout", f"{m.name}: generation cancelled")
        return Reply(reply["text"], reply.get("prompt_tokens"), reply.get("completion_tokens"),
                     time.perf_counter() - t0, reply.get("finish"))

    def _count_cancelled(self, fut: concurrent.futures.Future) -> None:
        reply = fut.result()
        with self._count_lock:
            finish = reply.get("finish")
            if finish == "not_started":
                self.counters.not_started += 1
            elif finish == "abort":
                self.counters.aborted += 1
            self.counters.tokens_after_deadline += int(reply.get("tokens_after_cancel") or 0)

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until the sidecar has answered every request sent so far (cancelled ones
        included), so the counters are final."""
        concurrent.futures.wait(list(self._pending.values()), timeout=timeout)
        for counted in list(self._accounting):  # callbacks run after a future's waiters wake
            counted.wait(timeout)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):  # already gone: nothing to flush
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_proc", "_start_lock", "_write_lock", "_count_lock", "_stderr", "_ids",
                  "_reader"):
            state[k] = None
        state["_pending"] = {}
        state["_accounting"] = []
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._start_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._ids = itertools.count(1)

