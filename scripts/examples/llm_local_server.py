"""One LLM ensemble member on a local OpenAI-compatible server (llama.cpp's, vLLM, LM Studio,
Ollama's /v1), evaluated on a few decisions, with its reply cache for an exact offline replay.

    python scripts/examples/llm_local_server.py                        # starts llama.cpp's server
    python scripts/examples/llm_local_server.py --base-url http://127.0.0.1:8000 --model my-model

Without ``--base-url`` it starts ``python -m llama_cpp.server`` (the ``llm`` extra) on
127.0.0.1 with the embedded SmolLM2-135M and stops it at the end. A model that small shows the
plumbing (prompts, schema-checked replies, latency, the cache), not trading skill. The second
run replays every reply from the cache, with no server: the same trades, exactly.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx


@dataclass
class Args:
    base_url: str = ""
    """an OpenAI-compatible server (empty: start llama.cpp's with the embedded SmolLM2)"""
    model: str = "smol"
    """the model name the server knows"""
    decisions: int = 4
    """decisions evaluated (each asks the model once)"""
    out: str = "runs/examples/llm"
    seed: int = 0


def start_llama_server(out: Path, alias: str) -> tuple[str, subprocess.Popen]:
    """llama.cpp's server on a free loopback port with the embedded SmolLM2; (url, process)."""
    from ffe_agents.llm.backends import embedded_model_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = embedded_model_path("smollm2-135m", out / "models")
    log = open(out / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                             "--n_threads", "1", "--model_alias", alias],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if proc.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited; see {out / 'server.log'}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                return url, proc
        except httpx.TransportError:
            time.sleep(0.25)
    proc.kill()
    raise SystemExit("llama_cpp.server did not answer within 60 s")


def evaluate(config: dict, decisions: int, seed: int):
    from ffe_agents.llm import LLMEnsemble
    from ffe_gym.data import synthetic_market
    from ffe_gym.evaluation import env_for, rollout

    md = synthetic_market(3, 600, "crypto", seed=seed)
    ensemble = LLMEnsemble(config)
    try:
        return rollout(ensemble, env_for(ensemble, None, md), window=(300, 300 + decisions),
                       seed=seed)
    finally:
        ensemble.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, value in asdict(Args()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = Args(**vars(p.parse_args(argv)))
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    server = None
    url = args.base_url
    if not url:
        url, server = start_llama_server(out, args.model)
    config = {"members": [{"name": "local", "backend": "openai", "model": args.model,
                           "base_url": url, "max_tokens": 160}],
              "cache_path": str(out / "llm-cache.sqlite"), "cache_mode": "read_write",
              "deadline_seconds": 120}
    try:
        live = evaluate(config, args.decisions, args.seed)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    s = live.policy_stats["members"]["local"]
    print(f"live: {live.steps} decisions, {s['calls']} calls, {s['answers']} answers, "
          f"{s['parse_failures']} unreadable, mean latency {s['latency_mean_s']:.2f} s, "
          f"{len(live.trades)} fills, return {live.metrics['total_return']:+.3%} [SYNTHETIC]")
    replay = evaluate(config | {"cache_mode": "read_only"}, args.decisions, args.seed)
    same = replay.trades.equals(live.trades) and replay.metrics == live.metrics
    hits = replay.policy_stats["members"]["local"]["cache_hits"]
    print(f"replay from the cache, no server: {hits} cache hits, identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
