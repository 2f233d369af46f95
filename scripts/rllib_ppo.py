"""RLlib PPO on ffe/Portfolio-v0: one CleanRL-style file, run in its own environment.

    bash scripts/setup_rllib.sh                      # .venv-rllib: ray[rllib] pins gymnasium 1.2.2
    .venv-rllib/bin/python scripts/rllib_ppo.py --iterations 1 --out runs/rllib-ppo
    python scripts/evaluate.py --policy runs/rllib-ppo     # from the main environment

``--out`` saves RLlib's checkpoint (``<out>/checkpoint``) and ``<out>/ffe-rllib.json`` (the env
config it trained with, the algorithm, the interpreter that has RLlib): the folder is then a
policy for ``evaluate`` and ``compare`` (:class:`ffe_agents.rllib.RLlibPolicy`, which runs the
saved RLModule in RLlib's own environment when the main one has no RLlib).

RLlib's default encoders do not take a Dict observation ("No default encoder config"), so the
env uses ``observation: flat`` (one Box). The env runner builds its envs with
``gym.make_vec(..., vectorization_mode="vector_entry_point")``: the batched engine
(:class:`ffe_gym.env.PortfolioVectorEnv`, n books in one call) is RLlib's vector env, not n
copies of the single env. Ray starts locally on 127.0.0.1 and is shut down at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Args:
    iterations: int = 1
    """training iterations (algo.train() calls)"""
    num_envs: int = 8
    """books per env runner, stepped together by PortfolioVectorEnv"""
    train_batch: int = 512
    """env steps per iteration"""
    episode_bars: int = 100
    """bars per training episode"""
    seed: int = 0
    config: str | None = None
    """an ffe-gym config YAML (default: the embedded synthetic market)"""
    out: str | None = None
    """save the checkpoint and ffe-rllib.json here"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, value in asdict(Args()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value) if value is not None
                       else str, default=value)
    args = Args(**vars(p.parse_args(argv)))

    import gymnasium as gym
    import ray
    import torch
    from ray.rllib.algorithms.ppo import PPOConfig

    import ffe_gym  # noqa: F401  (registers ffe/Portfolio-v0 with its vector entry point)

    torch.set_num_threads(1)
    env_config = {"config": {"env": {"observation": "flat", "episode_bars": args.episode_bars},
                             "risk": {"on_portfolio_stop": "flat"}}}
    if args.config:
        from ffe_gym.config import coerce_config, merge, to_dict

        env_config["config"] = merge(to_dict(coerce_config(args.config)),
                                     {"env": {"observation": "flat"}})
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    try:
        config = (PPOConfig()
                  .environment("ffe/Portfolio-v0", env_config=env_config)
                  .env_runners(num_env_runners=0, num_envs_per_env_runner=args.num_envs,
                               gym_env_vectorize_mode=gym.VectorizeMode.VECTOR_ENTRY_POINT)
                  .training(train_batch_size_per_learner=args.train_batch, minibatch_size=128,
                            num_epochs=1, lr=3e-4)
                  .rl_module(model_config={"fcnet_hiddens": [32, 32]})
                  .debugging(seed=args.seed))
        algo = config.build_algo()
        env = algo.env_runner.env.unwrapped
        started = time.perf_counter()
        for i in range(args.iterations):
            result = algo.train()
            runners = result.get("env_runners", {})
            print(json.dumps({"iteration": i + 1,
                              "env_steps": result.get("num_env_steps_sampled_lifetime"),
                              "episode_return_mean": runners.get("episode_return_mean"),
                              "vector_env": type(env).__name__,
                              "seconds": round(time.perf_counter() - started, 1)}))
        if args.out:
            save(algo, Path(args.out), env_config, args)
        algo.stop()
    finally:
        ray.shutdown()
    return 0


def save(algo, out: Path, env_config: dict, args: Args) -> None:
    """RLlib's checkpoint and what ffe-gym needs to act with it (ffe_agents.rllib)."""
    import ray

    out.mkdir(parents=True, exist_ok=True)
    algo.save_to_path(str((out / "checkpoint").resolve()))
    meta = {"kind": "rllib", "algo": "PPO", "checkpoint": "checkpoint", "module": "default_policy",
            "env_config": env_config, "ray": ray.__version__, "python": sys.executable,
            "iterations": args.iterations, "seed": args.seed}
    (out / "ffe-rllib.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps({"saved": str(out)}))


if __name__ == "__main__":
    raise SystemExit(main())
