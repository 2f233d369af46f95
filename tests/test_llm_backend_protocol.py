"""Every LLM backend implements one protocol; the ensemble has no backend-kind special case."""

from __future__ import annotations

import inspect
import re

import pytest

from ffe_agents.llm import backends, ensemble
from ffe_agents.llm.backends import (
    Backend,
    EmbeddedBackend,
    OllamaBackend,
    OpenAIBackend,
    member_files,
    member_identity,
)
from ffe_agents.llm.config import MemberConfig
from ffe_agents.llm.node_backend import NodeBackend

MEMBERS = {n for n, v in vars(Backend).items() if not n.startswith("_") and callable(v)}


@pytest.mark.parametrize("cls", [OllamaBackend, OpenAIBackend, EmbeddedBackend, NodeBackend])
def test_every_backend_implements_the_protocol(cls):
    assert MEMBERS >= {"health", "chat", "options", "offline_digest", "settled_mode",
                       "restore_mode", "aclose"}
    missing = [m for m in MEMBERS if not callable(getattr(cls, m, None))]
    assert not missing, (cls.__name__, missing)
    assert isinstance(cls.kind, str) and isinstance(cls.thinking_channel, bool)


def test_the_ensemble_never_asks_which_kind_of_backend_it_has():
    source = inspect.getsource(ensemble)
    assert not re.search(r"\.kind\s*[!=]=|\bbackend\s*[!=]=|\.binding\s*[!=]=|MODES", source)


def test_modes_are_restored_and_reported_by_the_backend_itself():
    member = MemberConfig(name="m", backend="openai", model="x", base_url="http://127.0.0.1:9")
    b = OpenAIBackend(member)
    assert b.settled_mode() is None
    b.restore_mode({"http://127.0.0.1:9": "json_object"}.get)
    assert b.settled_mode() == ("http://127.0.0.1:9", "json_object")
    other = OpenAIBackend(member)
    other.restore_mode({"http://127.0.0.1:9": "no such mode"}.get)
    assert other.settled_mode() is None
    ollama = OllamaBackend(MemberConfig(name="o", backend="ollama", model="x"))
    ollama.restore_mode(lambda _: "json_object")
    assert ollama.settled_mode() is None and ollama.offline_digest() is None


def test_member_files_and_identity_come_from_the_backend_module(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")
    local = MemberConfig(name="e", backend="embedded", model=str(gguf))
    served = MemberConfig(name="s", backend="ollama", model="llama3.2:3b")
    assert member_files(local) == {"model/e": b"GGUF fake"} and member_files(served) == {}
    ident = member_identity(local)
    assert ident["model/e"] == backends.file_digest(gguf) and "binding/e" in ident
    assert member_identity(served) == {}
