"""Train a stable-baselines3 agent on ffe/Portfolio-v0.

    python scripts/train.py --agent ppo --timesteps 20000 --seed 0 --out runs/ppo-s0
    python scripts/train.py --agent sac --config my.yaml --data prices/ --out runs/sac
    python scripts/train.py --agent ppo --out runs/ppo-s0 --timesteps 40000 --resume runs/ppo-s0

Trains on the training window of the data (``train.train_fraction``), validates on the
window after it (EvalCallback, best model kept), and leaves the test window untouched for
``scripts/evaluate.py``. Exit code 2 with a one-line message for bad data or config.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ffe_gym.config import load_config
from ffe_gym.data import market_from_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ffe-gym train", description=__doc__.split("\n")[0])
    p.add_argument("--agent", required=True, help="ppo, a2c, sac, td3, dqn or recurrent_ppo")
    p.add_argument("--agent-config", type=Path,
                   help="zoo-format hyperparameters (default configs/agents/<agent>.yaml)")
    p.add_argument("--config", help="env / engine / training YAML (default: the defaults)")
    p.add_argument("--data", help="market data file or folder (default: SYNTHETIC market)")
    p.add_argument("--timesteps", type=int, help="total environment steps (default: the "
                                                  "agent file's n_timesteps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    p.add_argument("--resume", type=Path, help="continue from a checkpoint or run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    from ffe_agents import sb3

    overrides = {"data": {"source": args.data}} if args.data else None
    cfg = load_config(args.config, overrides)
    spec = sb3.load_agent_spec(args.agent_config or sb3.default_agent_config(args.agent),
                               algo=args.agent)
    md = market_from_config(cfg.data)
    sb3.train(spec, cfg, md, args.out, seed=args.seed, timesteps=args.timesteps,
              resume=args.resume, progress=not args.no_progress)
    out = args.out
    print(f"trained {spec.algo} -> {out}/model.zip (TensorBoard: tensorboard --logdir {out}/tb)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from ffe_gym.commands import run_command

    return run_command(run, build_parser().parse_args(argv))
