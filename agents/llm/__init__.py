"""The LLM ensemble as one policy: ``from ffe_agents.llm import LLMEnsemble``.

Backends: Ollama, any OpenAI-compatible server, or llama.cpp in-process (embedded). Tiny
embedded models show the plumbing (prompts, parsing, voting, caching, deadlines), not trading
skill; configs/agents/llm_ensemble.yaml has the seed's Ollama models for real runs.
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
