"""The LLM wire formats against the official Python clients (``ollama`` 0.6.x, ``openai``).

Two directions, both on a loopback stub (no Ollama server can be installed here; the real
llama.cpp server covers the OpenAI path in ``test_llm_llama.py``):

* our requests: the official client, given the same parameters, sends the same JSON body as
  the ensemble's backend (and its own request types accept ours);
* the replies: the stub's replies, streamed and not, parse into the clients' own response
  types, and read back as the text and counts our backend reads.
"""

from __future__ import annotations

import json

import pytest

from ffe_agents.llm.stub import Behaviour, StubServer, decide_all
from ffe_gym.data import synthetic_market

ollama = pytest.importorskip("ollama")
openai = pytest.importorskip("openai")

MD = synthetic_market(3, 600, "crypto", seed=8)


def _our_request(stub: StubServer, backend: str, **member) -> dict:
    """The body of the first chat request one ensemble member sends to ``stub``."""
    from helpers import ensemble_rollout

    cfg = {"members": [{"name": "m", "backend": backend, "model": "m", "base_url": stub.url,
                        "max_tokens": 120, **member}], "cache_mode": "off"}
    ensemble_rollout(cfg, MD, (300, 301))
    return next(r["body"] for r in stub.requests if r["path"].endswith("chat")
                or r["path"].endswith("completions"))


def test_ollama_client_sends_our_request_and_reads_the_stub_replies():
    with StubServer({"m": Behaviour(reply=lambda r: decide_all(r, "SELL", 0.4))}) as s:
        ours = _our_request(s, "ollama")
        # the client's own request type accepts our body as it is
        ollama._types.ChatRequest.model_validate(ours)
        client = ollama.Client(host=s.url)
        n = len(s.requests)
        chunks = list(client.chat(model=ours["model"], messages=ours["messages"],
                                  format=ours["format"], options=ours["options"],
                                  keep_alive=ours["keep_alive"], stream=True))
        theirs = s.requests[n]["body"]
        single = client.chat(model=ours["model"], messages=ours["messages"],
                             format=ours["format"], options=ours["options"],
                             keep_alive=ours["keep_alive"])
        tags = client.list()
    assert theirs.pop("tools") == []  # the client always sends its (empty) tool list
    assert theirs == ours  # otherwise the same JSON, field for field
    text = "".join(c.message.content or "" for c in chunks)
    assert all(isinstance(c, ollama.ChatResponse) for c in chunks) and chunks[-1].done
    assert chunks[-1].done_reason == "stop" and chunks[-1].prompt_eval_count == 42
    assert text == single.message.content and json.loads(text)
    assert [m.model for m in tags.models] == ["m"] and tags.models[0].digest == "sha256:stub"


@pytest.mark.parametrize("stream", [True, False])
def test_openai_client_sends_our_request_and_reads_the_stub_replies(stream):
    with StubServer({"m": Behaviour(reply=lambda r: decide_all(r, "BUY", 0.6))}) as s:
        ours = _our_request(s, "openai", stream=stream)
        client = openai.OpenAI(base_url=f"{s.url}/v1", api_key="not-sent-by-us",
                               max_retries=0)
        n = len(s.requests)
        params = {k: v for k, v in ours.items() if k not in ("model", "messages")}
        reply = client.chat.completions.create(model=ours["model"], messages=ours["messages"],
                                               **params)
        theirs = s.requests[n]["body"]
        models = client.models.list()
    assert theirs == ours
    if stream:
        chunks = list(reply)
        assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        usage = chunks[-1].usage
    else:
        assert isinstance(reply, openai.types.chat.ChatCompletion)
        text, finish, usage = (reply.choices[0].message.content,
                               reply.choices[0].finish_reason, reply.usage)
    assert finish == "stop" and usage.prompt_tokens == 42 and usage.completion_tokens == 17
    assert json.loads(text) == json.loads(decide_all(ours | {"response_format": ours.get(
        "response_format")}, "BUY", 0.6))
    assert [m.id for m in models.data] == ["m"]
