"""Sweep a trained agent's hyperparameters on Ray Tune, scored on validation data only.

    python scripts/sweep.py --experiment configs/experiments/default.yaml --agent ppo --trials 8
    python scripts/sweep.py ... --address 127.0.0.2:6379        # on a Ray cluster

Writes ``<out>/<experiment>/sweeps/<agent>.yaml``; use it with ``train: {from_sweep: ...}``
(see :mod:`ffe_gym.evaluation.sweep`). Exit code 2 with one line for a bad experiment.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ffe-gym sweep", description=__doc__.split("\n")[0])
    p.add_argument("--experiment", type=Path, required=True, help="experiment YAML")
    p.add_argument("--agent", required=True, help="name of an agent with train.sweep")
    p.add_argument("--trials", type=int, help="override train.sweep.trials")
    p.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    p.add_argument("--workers", type=int, help="CPUs of a local Ray")
    p.add_argument("--out", type=Path, default=Path("runs"), help="root folder of the runs")
    p.add_argument("--seed", type=int, default=0, help="seed of the search")
    return p


def run(args: argparse.Namespace) -> int:
    from ffe_gym.config import read_yaml
    from ffe_gym.evaluation.experiment import load_experiment
    from ffe_gym.evaluation.sweep import sweep

    exp = load_experiment(args.experiment)
    path = sweep(exp, args.agent, args.out, trials=args.trials, address=args.address,
                 workers=args.workers, seed=args.seed)
    result = read_yaml(path)
    print(f"{result['trials']} trials of {args.agent}; best {result['objective']}: "
          f"{result['best_score']:.3f} with {result['best']}")
    print(f"result: {path}\nuse it: train: {{..., from_sweep: {path}}}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from ffe_gym.commands import run_command

    return run_command(run, build_parser().parse_args(argv))
