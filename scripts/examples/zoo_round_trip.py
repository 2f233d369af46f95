"""Train with rl_zoo3, then evaluate and compare its run folder in ffe-gym.

    python scripts/examples/zoo_round_trip.py          # needs rl_zoo3 (pip install rl_zoo3)

1. ``python -m rl_zoo3.train --algo ppo --env ffe/Portfolio-v0 --gym-packages ffe_gym
   ffe_agents.eiie --conf-file configs/agents/ppo.yaml --env-kwargs config:{...}``: the zoo
   trains on the data up to ``--train-end`` (``data.end`` in the env's config).
2. ``evaluate --policy logs/ppo/ffe-Portfolio-v0_1 --start <after it>``: the folder loads with
   the zoo's custom objects, without rl_zoo3 (its pickled ``lin_`` schedules are replaced, as
   the zoo's own enjoy script does), and writes the run page.
3. ``compare``: the zoo's model beside the baselines, in walk-forward windows that all lie after
   its training data (an experiment whose data starts after ``--train-end``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Args:
    timesteps: int = 200_000
    """the zoo's training steps"""
    train_end: str = "2022-08-31"
    """last day the zoo trains on (the embedded synthetic panel starts 2022-01-03)"""
    folds: int = 4
    """walk-forward test windows after it"""
    learning_rate: str = ""
    """override the file's, e.g. lin_1e-3 (the zoo's linear schedule, pickled in its model)"""
    out: str = "runs/examples/zoo"
    seed: int = 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, value in asdict(Args()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = Args(**vars(p.parse_args(argv)))
    out = Path(args.out).absolute()

    env_kwargs = {"data": {"end": args.train_end}}
    train = [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "ffe/Portfolio-v0",
             "--gym-packages", "ffe_gym", "ffe_agents.eiie",
             "--conf-file", str(ROOT / "configs" / "agents" / "ppo.yaml"),
             "-n", str(args.timesteps), "--seed", str(args.seed), "--log-folder",
             str(out / "logs"), "--eval-freq", "-1", "--verbose", "0",
             "--env-kwargs", f"config:{json.dumps(env_kwargs)}"]
    if args.learning_rate:
        train += ["--hyperparams", f"learning_rate:{json.dumps(args.learning_rate)}"]
    print("$", " ".join(train))
    subprocess.run(train, check=True)
    run = max((out / "logs" / "ppo").glob("ffe-Portfolio-v0_*"), key=lambda p: p.stat().st_mtime)

    from ffe_gym.commands import compare, evaluate

    first = (pd.Timestamp(args.train_end) + pd.Timedelta(days=1)).date().isoformat()
    code = evaluate.main(["--policy", str(run), "--start", first, "--no-progress",
                          "--out", str(out / "evaluate")])
    if code:
        return code
    exp = {"name": "zoo", "config": {"risk": {"on_portfolio_stop": "flat"}},
           "datasets": [{"name": "after-training", "data": {"source": "synthetic",
                                                             "start": first}}],
           "folds": {"n_folds": args.folds, "train": 48, "validation": 24, "test": 400,
                     "embargo": 0},
           "seeds": [args.seed],
           "agents": [{"name": "cash", "policy": "cash"},
                      {"name": "buy-and-hold", "policy": "buy-and-hold"},
                      {"name": "momentum", "policy": "momentum"},
                      {"name": "zoo-ppo", "policy": str(run)}]}
    path = out / "experiment.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return compare.main(["--experiment", str(path), "--out", str(out), "--no-progress"])


if __name__ == "__main__":
    raise SystemExit(main())
