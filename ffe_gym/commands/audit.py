"""Audit a policy: does it use its input (placebo), does it depend on the order of the assets,
does it read the future (causality)? See :mod:`ffe_gym.evaluation.audit`.

    ffe-gym audit momentum
    ffe-gym audit runs/ppo-s0 --data ../shared/data/ffe-h1-2020-2023 --windows 8
    python scripts/audit.py mypackage.policies:MyPolicy --config my.yaml --json audit.json

POLICY is anything ``evaluate --policy`` takes. The data after the warm-up is cut into
``--windows`` equal windows (the placebo's interval is over windows); every check runs on the
same windows, costs and limits (``--config``).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from ffe_gym.config import ConfigError, load_config
from ffe_gym.data import market_from_config
from ffe_gym.evaluation import env_for, resolve_policy
from ffe_gym.evaluation.audit import audit
from ffe_gym.manifest import write_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ffe-gym audit", description=__doc__.split("\n")[0])
    p.add_argument("policy", help="baseline name, run folder, module:Class")
    p.add_argument("--config", help="YAML config: data, costs, limits")
    p.add_argument("--data", help="market data file or folder (default: SYNTHETIC market)")
    p.add_argument("--windows", type=int, default=8, help="equal windows over the data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the findings here")
    return p


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, {"data": {"source": args.data}} if args.data else None)
    md = market_from_config(cfg.data)
    if args.windows < 1:
        raise ConfigError(f"--windows: need at least 1, got {args.windows}")
    probe = resolve_policy(args.policy)
    start = env_for(probe, cfg, md).core.warmup
    size = (md.n_bars - 1 - start) // args.windows
    if size < 2:
        raise ConfigError(f"--windows {args.windows}: {md.n_bars} bars leave fewer than 2 "
                          "bars a window after the warm-up")
    windows = [(start + k * size, start + (k + 1) * size - 1) for k in range(args.windows)]
    result = audit(lambda: resolve_policy(args.policy), cfg, md, windows, seed=args.seed)
    for line in result.lines():
        print(line)
    if md.is_synthetic:
        print("data: SYNTHETIC (the embedded market); pass --data for real prices")
    if args.json is not None:
        write_json(args.json, asdict(result) | {"windows_bars": windows,
                                                "data": md.describe()})
    return 0


def main(argv: list[str] | None = None) -> int:
    from ffe_gym.commands import run_command

    return run_command(run, build_parser().parse_args(argv))
