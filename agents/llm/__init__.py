"""The LLM ensemble as one policy: ``from ffe_agents.llm import LLMEnsemble``.

Several language models vote BUY / SELL / HOLD with a confidence per asset, as one policy in
the ``signals`` scheme. Members are served by Ollama, any OpenAI-compatible server (llama.cpp's,
vLLM, LM Studio, hosted; ``api_key_env`` names the variable holding the key), or embedded: GGUF
models from PyPI packages (SmolLM2-135M, Gemma-3-270M) run by node-llama-cpp in a sidecar
process (:mod:`~ffe_agents.llm.node_backend`) or by llama-cpp-python in this process. Tiny
embedded models show the plumbing, not trading skill; ``configs/agents/llm_ensemble.yaml``
has the seed's Ollama models for real runs. A config (:mod:`~ffe_agents.llm.config`) states:

* **Prompts** (:mod:`~ffe_agents.llm.prompts`) from the same observation as the RL agents, read
  by field name: the setting (bar length, decision interval, costs, shorting), a legend of each
  field on its familiar scale, per asset its returns, rebased price, volatility, RSI, MACD,
  volume z-score and position (with the moves that trigger its stop and target), then the
  portfolio. One joint prompt per model (default) or one per asset; ``prompt_format: table``
  and ``reply: trades`` (at most ``max_trades`` trades, every other asset HOLD) keep prompt and
  reply small at large N. The **leakage guard** (on by default) names assets ``ASSET_1..N`` and
  time in bar offsets: no date ever reaches a prompt. The allowed actions are listed in an order
  drawn per asset from a digest of the prompt. A prompt that would overflow the member's
  ``context`` has its history halved (counted), never its instructions. ``memory: k`` adds each
  member's last k decisions per asset with their outcomes, from bars already seen.
* **Structured output**: Ollama gets the JSON schema as ``format``; OpenAI-compatible servers
  are tried with ``json_schema``, then ``json_object`` with the schema, then instructions (the
  working mode is remembered per server). The request bodies are the ones the official
  ``ollama`` and ``openai`` clients send (tested). ``thinking: true`` gives reasoning models a
  ``thinking_tokens`` budget of their own.
* **Parsing never raises** (:mod:`~ffe_agents.llm.parser`): schema, then fences and think tags
  stripped, then keywords (a negated action does not count); an unreadable reply is HOLD with
  origin ``fallback``, a reply cut at its token limit is a counted ``truncation``, confidences
  on a 0-100 scale are read as percent only when the whole reply uses that scale.
* **Voting** (:mod:`~ffe_agents.llm.voting`): confidence-weighted or majority, a quorum,
  local-first weights, a penalty for missing members, fallback tiers; a zero confidence
  abstains. Larger (``local: false``) members are asked only when the local vote is weak
  (``escalation``), within a call budget.
* **Deadline**: every member and asset is asked concurrently under one deadline per decision,
  retries included; a slow or dead member is missing, never a stall. Models load, and their
  digests are checked, before the first decision. HTTP replies stream and the connection is
  closed at the deadline, which makes llama.cpp's server stop generating; an embedded generation
  stops at its next token and a queued one never starts. A member failing ``breaker.failures``
  decisions in a row is suspended for ``breaker.suspend_decisions``.
* **Cache** (:mod:`~ffe_agents.llm.cache`): every reply goes to a SQLite file keyed by backend,
  model, binding, options, schema, messages and prompt version, with the model's digest beside
  it (a reply stored under another digest is not replayed online). ``cache_mode: read_only``
  replays a run offline; ``cache_mode: replay`` loads no model and makes a missing reply an
  error naming the member and bar. Concurrent writers lose no reply. ``cache_path`` and
  ``model_dir`` default to ``{out}/llm-cache.sqlite`` and ``{out}/models``.
* **Record and reproducibility**: in a comparison each LLM job writes ``llm_calls.csv`` (per
  decision, member and prompt: the outcome ``cache`` / ``new`` / ``timeout`` / ``not_started`` /
  ``error`` / ``skipped`` / ``replay_miss``, answers, parse failures, latency). A run whose
  replies depended on the machine's load (a timeout, a call the deadline overtook, a suspended
  member) has ``policy_stats.reproducible: false`` with the reasons, and is flagged NOT
  REPRODUCIBLE. Per member, the distinct answers per asset and the share of first-listed
  actions name a member that does not read the market (``input_flags``; the table flags it).
"""

EMBEDDED_PROFILE = {
    "members": [
        {"name": "smollm2", "backend": "embedded", "model": "smollm2-135m", "context": 2048,
         "binding": "node-llama-cpp"},
        {"name": "gemma3", "backend": "embedded", "model": "gemma3-270m", "context": 2048,
         "binding": "node-llama-cpp"},
    ],
    "prompt_mode": "joint",
    "prompt_format": "table",
    "reply": "trades",
    "max_trades": 3,
    "history_bars": 2,
    "deadline_seconds": 60.0,
}

from ffe_agents.llm.config import LLMConfig, MemberConfig, load_llm_config  # noqa: E402
from ffe_agents.llm.ensemble import LLMEnsemble  # noqa: E402
from ffe_agents.llm.parser import Decision, parse_decision, parse_joint  # noqa: E402

__all__ = ["EMBEDDED_PROFILE", "Decision", "LLMConfig", "LLMEnsemble", "MemberConfig",
           "load_llm_config", "parse_decision", "parse_joint"]
