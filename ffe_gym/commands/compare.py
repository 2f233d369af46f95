"""Compare policies: run an experiment grid, print the table, write the report.

    python scripts/compare.py                                   # configs/experiments/default.yaml
    python scripts/compare.py --experiment configs/experiments/real_h1.yaml --backend process
    python scripts/compare.py --backend ray --address auto      # the same grid on a Ray cluster

Jobs land in ``<out>/<experiment>/...``; finished jobs are skipped, so running the same command
again after an interruption finishes only what is missing. Exit code 2 with a one-line message
for a bad experiment, config or data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ffe_gym.config import ConfigError, to_dict


def default_experiment() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        p = base / "configs" / "experiments" / "default.yaml"
        if p.exists():
            return p
    raise ConfigError("no configs/experiments/default.yaml here or in the source tree; "
                      "pass --experiment PATH")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ffe-gym compare", description=__doc__.split("\n")[0])
    p.add_argument("--experiment", type=Path, help="experiment YAML (default: default.yaml)")
    p.add_argument("--backend", choices=["serial", "process", "ray"], default="serial")
    p.add_argument("--workers", type=int, help="process / local Ray workers")
    p.add_argument("--address", help="Ray cluster address (ray backend)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="root folder of the runs")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> Path:
    from rich.console import Console

    from ffe_gym.evaluation import experiment as ex
    from ffe_gym.evaluation import grid, report

    exp = ex.load_experiment(args.experiment or default_experiment())
    specs = ex.jobs(exp, args.out)
    console = Console() if sys.stdout.isatty() else Console(width=120)
    console.print(f"[bold]{exp.name}[/bold]: {len(specs)} jobs = {len(exp.agents)} agents x "
                  f"{len(exp.seeds)} seeds x {len(exp.datasets)} datasets x "
                  f"{exp.folds.n_folds} folds ({args.backend})")
    rows = grid.run_jobs(specs, args.backend, args.workers, args.address,
                         progress=not args.no_progress)
    skipped = sum(r.get("skipped", False) for r in rows)
    if skipped:
        console.print(f"{skipped} jobs were already done and were read back")
    df = grid.results_frame(rows, exp)
    agg = grid.aggregate(df, exp, reps=args.reps)
    out = Path(args.out) / exp.name
    report.write_files(out, df, agg)
    synthetic = bool(df["synthetic"].any())
    title = f"ffe-gym comparison: {exp.name}" + (" [SYNTHETIC DATA]" if synthetic else "")
    console.print(report.terminal_table(agg, title))
    path = report.html_report(out / "report.html", title=title, df=df, rows=rows, agg=agg,
                              config={"experiment": to_dict(exp)}, synthetic=synthetic)
    console.print(f"report: {path}\nresults: {out / 'results.csv'}, {out / 'summary.json'}")
    return path


def main(argv: list[str] | None = None) -> int:
    from ffe_gym.commands import run_command

    return run_command(run, build_parser().parse_args(argv))
