"""Train RLlib's PPO in its own environment, then evaluate its checkpoint from this one.

    bash scripts/setup_rllib.sh                   # once: .venv-rllib (ray[rllib] pins gymnasium)
    python scripts/examples/rllib_checkpoint.py

``scripts/rllib_ppo.py --out`` runs in ``.venv-rllib`` and saves the checkpoint with
``ffe-rllib.json``, training on the data up to ``--train-end``; ``evaluate --policy <folder>
--start <after it>`` here acts with the saved RLModule
(``ffe_agents.rllib``: in a child process of ``.venv-rllib``, since this environment has no
RLlib) and writes the run page. The same folder is a policy in an experiment file
(``{name: rllib-ppo, policy: runs/examples/rllib/model}``).
"""

from __future__ import annotations

import argparse
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Args:
    iterations: int = 20
    """RLlib training iterations"""
    python: str = str(ROOT / ".venv-rllib" / "bin" / "python")
    """the interpreter that has ray[rllib]"""
    train_end: str = "2022-08-31"
    """last day it trains on (the embedded synthetic panel starts 2022-01-03)"""
    out: str = "runs/examples/rllib"
    seed: int = 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, value in asdict(Args()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = Args(**vars(p.parse_args(argv)))
    if not Path(args.python).exists():
        print(f"no RLlib interpreter at {args.python}: run bash scripts/setup_rllib.sh")
        return 2
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    config = out / "train.yaml"
    config.write_text(yaml.safe_dump({"data": {"end": args.train_end},
                                      "env": {"episode_bars": 100},
                                      "risk": {"on_portfolio_stop": "flat"}}))
    train = [args.python, str(ROOT / "scripts" / "rllib_ppo.py"), "--iterations",
             str(args.iterations), "--seed", str(args.seed), "--config", str(config),
             "--out", str(out / "model")]
    print("$", " ".join(train))
    subprocess.run(train, check=True)

    from ffe_gym.commands import evaluate

    first = (pd.Timestamp(args.train_end) + pd.Timedelta(days=1)).date().isoformat()
    return evaluate.main(["--policy", str(out / "model"), "--start", first, "--no-progress",
                          "--out", str(out / "evaluate")])


if __name__ == "__main__":
    raise SystemExit(main())
