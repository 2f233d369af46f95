"""Typed configuration of the LLM ensemble (YAML -> dataclasses, checked like ffe_gym.config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from ffe_gym.config import ConfigError, from_dict, load_yaml_as


@dataclass
class MemberConfig:
    """One model of the ensemble.

    ``backend``: ``ollama`` (``POST /api/chat``), ``openai`` (any OpenAI-compatible server:
    llama.cpp's, vLLM, LM Studio, hosted APIs) or ``embedded`` (llama.cpp on this machine,
    through ``binding``: ``llama-cpp-python`` in this process, or ``node-llama-cpp`` in a
    sidecar; ``model`` is ``smollm2-135m``, ``gemma3-270m`` or a path to a GGUF file).
    """

    name: str
    backend: Literal["ollama", "openai", "embedded"]
    model: str
    base_url: str | None = None
    api_key_env: str | None = None  # the NAME of an environment variable, never the key
    local: bool = True  # local members answer first; the others only on escalation
    weight: float = 1.0
    temperature: float = 0.0
    seed: int = 0
    max_tokens: int | None = None  # None: sized from the reply schema (prompts.token_budget)
    context: int = 2048  # num_ctx (Ollama) / n_ctx (embedded)
    keep_alive: str | None = "5m"
    threads: int = 1  # embedded only
    binding: Literal["llama-cpp-python", "node-llama-cpp"] = "llama-cpp-python"  # embedded:
    # llama.cpp in this process (compiled at setup), or prebuilt from npm in a sidecar process
    abort_at_deadline: bool = True  # embedded: stop a generation at its deadline (else it
    # runs on and only its tokens after the deadline are counted)
    thinking: bool = False  # a thinking model (deepseek-r1, qwen3, gpt-oss): Ollama gets
    # think: true and returns message.thinking; other servers get a schema whose first
    # property is a bounded free-text reasoning field
    thinking_tokens: int = 1024  # its own token budget, added to the reply's
    stream: bool = True  # ollama / openai: stream the reply and close the connection at the
    # deadline, so the server stops generating (false: one response, which a server may keep
    # generating after the client gave up)
    training_cutoff: str | None = None  # the last date of the model's training data as its
    # maker states it (YYYY, YYYY-MM or YYYY-MM-DD): evaluate and ffe-gym live say whether
    # the bars come after it (out of sample) or not

    def __post_init__(self) -> None:
        if self.training_cutoff is not None:
            from ffe_gym.evaluation.policy import cutoff_end

            try:
                cutoff_end(self.training_cutoff)
            except ValueError:
                raise ConfigError(f"members.{self.name}.training_cutoff: "
                                  f"{self.training_cutoff!r} is not a date (YYYY-MM or "
                                  "YYYY-MM-DD)") from None


@dataclass
class VotingConfig:
    """How member decisions become one decision per asset."""

    method: Literal["confidence_weighted", "majority"] = "confidence_weighted"
    quorum: float = 0.5  # share of asked members that must give a readable answer
    local_weight: float = 1.0  # multiplies the weight of local members
    remote_weight: float = 1.0
    missing_penalty: float = 0.5  # confidence *= 1 - penalty * share of members missing
    fallback: list[str] = field(default_factory=lambda: ["strategy", "majority",
                                                         "most_confident", "hold"])

    def __post_init__(self) -> None:
        allowed = {"strategy", "majority", "most_confident", "hold"}
        bad = [f for f in self.fallback if f not in allowed]
        if bad:
            raise ConfigError(f"voting.fallback: unknown tier {bad[0]!r} "
                              f"(allowed: {', '.join(sorted(allowed))})")


@dataclass
class EscalationConfig:
    """Two phases: remote members are asked only when the local vote is weak."""

    min_confidence: float = 0.6
    min_agreement: float = 0.6
    call_budget: int = 200  # remote calls per run; only calls really sent are charged
    reserve_seconds: float | None = None  # of the deadline kept for the remote phase when
    # there are local and remote members (None: a quarter of it); the local phase ends before
    min_seconds: float = 0.25  # no escalation with less time left than this (counted)


@dataclass
class BreakerConfig:
    """Circuit breaker: a member whose calls time out (or cannot connect) in ``failures``
    decisions in a row is not asked for the next ``suspend_decisions`` decisions (counted),
    then tried again; one more failure suspends it again. ``failures: 0`` switches it off."""

    failures: int = 3
    suspend_decisions: int = 10


@dataclass
class AdaptiveConfig:
    """Member weights from realised P&L (the seed's accuracy and return score)."""

    enabled: bool = False
    rate: float = 0.05  # EMA rate of accuracy and return score
    load: str | None = None  # JSON of weights to start from
    save: str | None = None  # write the weights here at the end of each episode


@dataclass
class LLMConfig:
    """The ensemble: members, prompts, voting, deadline, cache."""

    members: list[MemberConfig] = field(default_factory=list)
    prompt_mode: Literal["joint", "per_asset"] = "joint"
    # joint mode: a reply with an action for every asset (every_asset), or only the trades, at
    # most max_trades of them, every other asset HOLD (trades: the reply's length does not grow
    # with N); prompt_format table shows the assets as columns and rows (about a third of the
    # prompt tokens of one JSON object per asset)
    reply: Literal["every_asset", "trades"] = "every_asset"
    max_trades: int = 4
    prompt_format: Literal["json", "table"] = "json"
    prompt_version: str = "v2"  # v2: setting, legend, positions, neutral action order
    leakage_guard: bool = True
    history_bars: int = 8
    memory: int = 0  # > 0: each member sees its own last k decisions per asset and what
    # followed them (causal: from bars already seen; see ffe_agents.llm.memory)
    deadline_seconds: float = 30.0  # per decision, retries and backoff included
    # loading the models and checking their digests, before the first decision and outside
    # every decision's deadline
    load_seconds: float = 600.0
    retries: int = 1
    backoff_seconds: float = 0.2
    concurrency: int = 16  # calls in flight at once, over all members and assets
    # ``{out}``: the run's output folder (a comparison's --out; "runs" when none is given), so
    # nothing lands outside it; a path without it is used as written (shared on purpose)
    cache_path: str | None = "{out}/llm-cache.sqlite"
    # read_write; read_only (a miss still asks a reachable model); replay (never asks a model:
    # a miss is an error naming the decision, or with replay_miss: hold a counted HOLD)
    cache_mode: Literal["read_write", "read_only", "replay", "off"] = "read_write"
    replay_miss: Literal["error", "hold"] = "error"
    replay_other_digest: bool = False  # online, replay a reply stored under another model
    # digest (a re-pulled model behind the same name); default: ask the model again
    model_dir: str = "{out}/models"  # where embedded models are assembled
    voting: VotingConfig = field(default_factory=VotingConfig)
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)

    def __post_init__(self) -> None:
        if not self.members:
            raise ConfigError("members: the ensemble needs at least one member")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ConfigError("members: member names must be unique")
        if self.max_trades < 1:
            raise ConfigError(f"max_trades: {self.max_trades} (at least 1)")
        if self.prompt_mode != "joint" and (self.reply != "every_asset"
                                            or self.prompt_format != "json"):
            raise ConfigError("reply: trades and prompt_format: table need prompt_mode: joint")
        for m in self.members:
            if m.backend == "openai" and not m.base_url:
                raise ConfigError(f"members.{m.name}.base_url: required for backend openai")


OUT = "{out}"  # in cache_path and model_dir: the run's output folder


def load_llm_config(config: LLMConfig | Mapping[str, Any] | str | Path | None,
                    out: str | Path | None = None) -> LLMConfig:
    """An :class:`LLMConfig` from a YAML path, a mapping, or itself, with ``{out}`` in
    ``cache_path`` and ``model_dir`` replaced by ``out`` (``"runs"`` when None)."""
    if isinstance(config, LLMConfig):
        cfg = replace(config)
    else:
        if config is None:
            from ffe_agents.llm import EMBEDDED_PROFILE

            config = EMBEDDED_PROFILE
        if isinstance(config, (str, Path)):
            cfg = load_yaml_as(LLMConfig, config, "LLM config")
        else:
            cfg = from_dict(LLMConfig, config)
    base = str(out) if out is not None else "runs"
    if cfg.cache_path is not None:
        cfg.cache_path = cfg.cache_path.replace(OUT, base)
    cfg.model_dir = cfg.model_dir.replace(OUT, base)
    return cfg
