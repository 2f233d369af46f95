"""Train PPO with the shared per-asset encoder and compare it with the baselines, from a minimal
experiment file (``configs/experiments/minimal.yaml``).

    python scripts/examples/ppo_vs_baselines.py
    python scripts/examples/ppo_vs_baselines.py --data prices.csv --timesteps 200000

Every agent is scored in every walk-forward test window against the same reference, with the
controls (cash; PPO's untrained twin) beside it; the table says how many windows and runs stand
behind each interval. The report (HTML) lands in ``<out>/minimal/report.html``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Args:
    experiment: str = str(ROOT / "configs" / "experiments" / "minimal.yaml")
    """the experiment file to start from"""
    data: str | None = None
    """your prices (a file or folder load_market reads); default: the file's synthetic panel"""
    timesteps: int = 0
    """PPO's training steps per fold (0: the file's)"""
    folds: int = 0
    """walk-forward test windows (0: the file's)"""
    out: str = "runs/examples"
    """where the runs and the report go"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, value in asdict(Args()).items():
        p.add_argument(f"--{name}", type=int if isinstance(value, int) else str, default=value)
    args = Args(**vars(p.parse_args(argv)))

    exp = yaml.safe_load(Path(args.experiment).read_text())
    if args.data:
        exp["datasets"] = [{"name": Path(args.data).stem, "data": {"source": args.data}}]
    if args.folds:
        exp["folds"]["n_folds"] = args.folds
    for agent in exp["agents"]:
        if args.timesteps and "train" in agent:
            agent["train"]["timesteps"] = args.timesteps
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "experiment.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))

    from ffe_gym.commands import compare

    return compare.main(["--experiment", str(path), "--out", str(out), "--backend", "process",
                         "--no-progress"])


if __name__ == "__main__":
    raise SystemExit(main())
