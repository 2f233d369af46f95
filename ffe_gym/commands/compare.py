"""Compare policies: run an experiment grid, print the table, write the report.

    python scripts/compare.py                                   # configs/experiments/default.yaml
    python scripts/compare.py --experiment configs/experiments/real_h1.yaml --backend process
    python scripts/compare.py --backend ray --address auto      # the same grid on a Ray cluster

Jobs land in ``<out>/<experiment>/...``; a finished job is reused when its stored identity
(config, data, agent, window, seed, version) matches, so running the same command again after an
interruption finishes only what is missing, and a changed experiment recomputes what changed.
Exit code 2 with a one-line message for a bad experiment, config or data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ffe_gym.config import ConfigError, to_dict


def _at_least_one(text: str) -> int:
    """An argparse type: an integer >= 1 (checked before any job runs)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} (at least 1)")
    return value


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
    p.add_argument("--reps", type=_at_least_one, default=2000,
                   help="bootstrap resamples (at least 1)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--verify", action="store_true",
                   help="compute nothing: check every job's run folder (identity, and each "
                        "file's size and SHA-256 against metrics.json) and list what is "
                        "missing, stale or damaged; exit 1 if any")
    p.add_argument("--keep-unreproducible", action="store_true",
                   help="reuse runs whose results depended on the machine's load (an LLM "
                        "member cut off at its deadline), flagged, instead of recomputing them")
    return p


def data_note(md) -> str:
    """What a dataset is, in one line: its series, what is synthetic or close-only."""
    from ffe_gym.data.packaged import describe_packaged

    parts = [md.describe()]
    series = describe_packaged(md)
    if series:
        parts.append(series)
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ffe_gym.evaluation import experiment as ex
    from ffe_gym.evaluation import grid, report, runner

    exp = ex.load_experiment(args.experiment or default_experiment())
    specs = ex.jobs(exp, args.out)
    if args.verify:
        return verify(specs, Path(args.out) / exp.name)
    console = Console() if sys.stdout.isatty() else Console(width=120)
    agents = sum(1 for s in specs if not s.is_reference)
    console.print(f"[bold]{exp.name}[/bold]: {len(specs)} jobs = {agents} agent runs "
                  f"({len(exp.agents)} agents x {len(exp.variants)} rule variant(s) x "
                  f"{len(exp.datasets)} dataset(s) x {exp.folds.n_folds} windows; "
                  f"deterministic agents once per window, the others x {len(exp.seeds)} "
                  f"seeds) + {len(specs) - agents} reference runs ({args.backend})")
    count = [0]
    try:
        rows = runner.run_jobs(specs, args.backend, args.workers, args.address,
                               progress=not args.no_progress,
                               on_result=lambda _: count.__setitem__(0, count[0] + 1),
                               keep_unreproducible=args.keep_unreproducible)
    except KeyboardInterrupt:
        print(f"interrupted: {count[0]} of {len(specs)} jobs done; rerun to resume",
              file=sys.stderr)
        return 130
    states = {k: sum(r["reuse"] == k for r in rows) for k in ("reused", "new", "stale",
                                                                "damaged", "unreproducible",
                                                                "failed")}
    console.print(f"jobs: {states['new']} computed, {states['reused']} reused (identity "
                  f"matched), {states['stale']} recomputed because stale (the experiment, "
                  f"data or code changed), {states['damaged']} recomputed because damaged, "
                  + (f"{states['unreproducible']} recomputed because their results depended "
                     f"on the machine's load, " if states["unreproducible"] else "")
                  + f"{states['failed']} failed")
    failures = [r for r in rows if r["reuse"] == "failed"]
    for r in failures:
        console.print(f"FAILED {r['dataset']}/{r['variant']}/fold{r['fold']}/{r['agent']}/"
                      f"seed{r['seed']}: {r['error']}", highlight=False, markup=False)
    out = Path(args.out) / exp.name
    if len(failures) == len(rows):
        console.print("every job failed: no table, no report")
        return 1
    df = grid.results_frame(rows, exp)
    agg = grid.aggregate(df, exp, reps=args.reps)
    agg["failures"] = [{k: r[k] for k in ("dataset", "variant", "fold", "agent", "seed",
                                          "error")} for r in failures]
    report.write_files(out, df, agg)
    synthetic = bool(df["synthetic"].any())
    data = " | ".join(f"{d.name}: {data_note(ex.market_for(ex.dataset_config(exp, d)))}"
                      for d in exp.datasets)
    title = f"ffe-gym comparison: {exp.name}" + (" [SYNTHETIC DATA]" if synthetic else "")
    console.print(report.terminal_table(agg, title))
    for line in (report.verdicts(agg) + report.notes(agg, data) + report.learning_lines(agg)
                 + report.diagnostic_lines(agg) + report.flag_lines(agg)
                 + report.effect_lines(agg)):
        console.print(line, highlight=False, markup=False)
    resolved = {f"{d.name} / {v}": to_dict(ex.variant_config(exp, d, v))
                for d in exp.datasets for v in exp.variants}
    path = report.html_report(out / "report.html", title=title, df=df, rows=rows, agg=agg,
                              config={"experiment": to_dict(exp), "resolved": resolved},
                              synthetic=synthetic, data=data)
    console.print(f"report: {path}\nresults: {out / 'results.csv'}, {out / 'summary.json'}")
    if failures:
        console.print(f"{len(failures)} job(s) failed (listed above and in the report); the "
                      "table leaves them out. Rerun to retry them.")
        return 1
    return 0


def verify(specs: list, folder: Path) -> int:
    """Check every job's run folder without computing anything (``--verify``): print what is
    missing, stale or damaged (each damaged file with what is wrong), then one count line.
    Returns 0 when every run checks out, 1 otherwise."""
    from ffe_gym.evaluation.jobs import relative_folder, stored

    counts = {"ok": 0, "missing": 0, "stale": 0, "damaged": 0}
    for spec in specs:
        _, state, problems = stored(spec)
        where = relative_folder(spec)
        if state == "reused":
            counts["ok"] += 1
        elif state == "new":
            counts["missing"] += 1
            print(f"missing  {where}")
        elif state == "stale":
            counts["stale"] += 1
            print(f"stale    {where} (computed for another identity: the experiment, data "
                  "or code changed)")
        else:
            counts["damaged"] += 1
            for problem in problems:
                print(f"DAMAGED  {where}/{problem}")
    print(f"{folder}: {len(specs)} jobs: " + ", ".join(f"{v} {k}" for k, v in counts.items())
          + ("" if counts["ok"] == len(specs) else "; `compare` with the same arguments "
             "recomputes what is not ok"))
    return 0 if counts["ok"] == len(specs) else 1


def main(argv: list[str] | None = None) -> int:
    from ffe_gym.commands import run_command

    return run_command(run, build_parser().parse_args(argv))
