"""One job of an experiment: compute it anywhere, write it on the driver, reuse it when it matches.

* :func:`compute_job` runs on any worker (this process, a process pool, a Ray node without a
  shared filesystem): it trains where needed and evaluates in a private temporary folder, and
  returns the summary row and every file of the run folder as bytes. The files the agent names
  (agent YAML, LLM config, a trained run's model and normalisation statistics) travel inside the
  spec (``JobSpec.inputs``) and are written next to the job, so the worker uses exactly the
  content the job's identity hashed. A failure is returned, not raised: the grid records it.
* :func:`write_job` runs on the driver: it writes the files into a temporary folder beside the
  run folder and renames it into place, so a run folder is complete or absent.
* :class:`JobLock` is an advisory lock per run folder (``flock``, released by the kernel when its
  process dies): two comparisons of one experiment never compute or write the same job twice.
* :func:`finished` says whether a run folder can be reused: its stored identity matches and
  every file checks out against the size and SHA-256 that ``metrics.json`` records for it
  (:func:`check_folder`); otherwise the job is ``new``, ``stale`` or ``damaged``.
  ``metrics.json`` keeps the run folder's path inside the experiment's folder, so a tree moved
  or copied elsewhere is read from where it is.
* A failure of the machine's file system inside a job (disk full, a file-size limit, too many
  open files: ``MACHINE_ERRNOS``) is sent back as such, and the driver stops with one line
  rather than record every job as failed the same way.

Nothing here writes or deletes outside the experiment's output folder: names are checked when
the experiment loads, the folder is checked to stay inside the root, and a symlink found where a
run folder should be is unlinked, never followed.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import tempfile
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ffe_gym.config import Config, from_dict, to_dict
from ffe_gym.data import MarketData
from ffe_gym.data.splits import Window
from ffe_gym.evaluation.experiment import TRAINER, JobSpec, market_for, policy_class
from ffe_gym.evaluation.policy import hook
from ffe_gym.manifest import _UMASK, TEMPORARY, manifest, named_errors

RESULT_FILES = ("metrics.json", "equity.csv", "trades.csv", "weights.csv", "manifest.json")


class JobFailed(RuntimeError):
    """A job that raised; its message names the job and the error."""


# a disk full, a file-size cap, a read-only or exhausted file system: every job would fail
# the same way, so the driver stops with one line instead of recording each as failed
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS,
                            errno.EMFILE, errno.ENFILE})


class DamagedRun(RuntimeError):
    """A run folder whose files do not match what was recorded when it was written."""


def inside(root: Path, path: Path) -> Path:
    """``path`` if it stays inside ``root`` once symlinks are resolved; else ValueError."""
    real_root = Path(root).resolve()
    real = Path(path).parent.resolve() / Path(path).name
    if not real.is_relative_to(real_root):
        raise ValueError(f"{path} resolves outside the output folder {real_root}; refusing "
                         "to write or delete there")
    return real


def remove(path: Path) -> None:
    """Delete a run or temporary folder without following a symlink."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


class JobLockError(ValueError):
    """A lock path that leads outside the output folder or through a symbolic link."""


class JobLock:
    """An exclusive advisory lock on one job's run folder (``.<seed>.lock`` beside it). The
    path is checked to stay inside the experiment's output folder before anything is created,
    and the lock file is opened without following a symbolic link (:class:`JobLockError`)."""

    def __init__(self, spec: JobSpec) -> None:
        folder = spec.folder
        self.root = Path(spec.root) / spec.experiment
        self.path = folder.parent / f".{folder.name}.lock"
        self.fd: int | None = None

    def acquire(self, block: bool = True) -> bool:
        try:
            inside(self.root, self.path)  # a symlinked agent or fold folder leads elsewhere
        except ValueError as exc:
            raise JobLockError(str(exc)) from None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise JobLockError(f"{self.path} is a symbolic link; refusing to follow it "
                                   "(remove it and run again)") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> JobLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def file_record(name: str, content: bytes) -> dict[str, Any]:
    """What metrics.json keeps of one file of a run: size, SHA-256 and, for a CSV, its rows
    (lines after the header)."""
    return {"size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
            "rows": content.count(b"\n") - 1 if name.endswith(".csv") else None}


def check_folder(folder: Path, row: dict[str, Any]) -> list[str]:
    """What is wrong with a run folder's files against the records of its metrics.json
    (``row``): each file missing, replaced by a link, of another size or content, and an
    equity curve whose length is not the run's recorded bars + 1. Empty when it checks out."""
    records = row.get("files")
    if not isinstance(records, dict):
        return ["metrics.json records no files (written by an older version)"]
    problems = [f"{name}: not recorded in metrics.json" for name in RESULT_FILES
                if name != "metrics.json" and name not in records]
    for name, rec in sorted(records.items()):
        path = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            problems.append(f"{name}: a recorded path outside the run folder")
        elif path.is_symlink() or not path.is_file():
            problems.append(f"{name}: missing" if not path.is_symlink() else f"{name}: a link")
        elif (size := path.stat().st_size) != rec.get("size"):
            problems.append(f"{name}: {size} bytes, {rec.get('size')} recorded "
                            "(truncated or rewritten)")
        elif _sha256(path) != rec.get("sha256"):
            problems.append(f"{name}: content differs from its recorded SHA-256")
    equity = records.get("equity.csv") or {}
    if isinstance(row.get("bars"), int) and equity.get("rows") not in (None, row["bars"] + 1):
        problems.append(f"equity.csv: {equity.get('rows')} rows recorded for a run of "
                        f"{row['bars']} bars")
    return problems


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def stored(spec: JobSpec) -> tuple[dict[str, Any] | None, str, list[str]]:
    """(row, state, problems) of a job's folder: the stored row when its identity matches and
    every file checks out (:func:`check_folder`), with ``folder`` where the run is now (a
    tree moved or copied elsewhere is read from where it is); otherwise None with ``new``,
    ``stale`` (another identity) or ``damaged`` and what is wrong."""
    folder = spec.folder
    done = folder / "metrics.json"
    if not done.exists() and not done.is_symlink():
        return None, "new", []
    if done.is_symlink():
        return None, "damaged", ["metrics.json: a link"]
    try:
        row = json.loads(done.read_text())
    except (OSError, ValueError) as exc:
        return None, "damaged", [f"metrics.json: unreadable ({type(exc).__name__})"]
    if not isinstance(row, dict):
        return None, "damaged", ["metrics.json: not an object"]
    if row.get("identity") != spec.identity:
        return None, "stale", []
    problems = check_folder(folder, row)
    if problems:
        return None, "damaged", problems
    return row | {"folder": str(folder)}, "reused", []


def finished(spec: JobSpec, keep_unreproducible: bool = False
             ) -> tuple[dict[str, Any] | None, str]:
    """(row, state) of a job's folder: ``reused`` with its row when the stored identity matches
    and its files check out (:func:`stored`); otherwise None with ``new``, ``stale``,
    ``damaged`` or ``unreproducible`` (its policy said its result depends on the machine's
    load, e.g. an LLM member cut off at its deadline: recomputed unless
    ``keep_unreproducible``, when it is reused and stays flagged)."""
    row, state, _ = stored(spec)
    if row is None:
        return None, state
    if (row.get("policy_stats") or {}).get("reproducible") is False and not keep_unreproducible:
        return None, "unreproducible"
    return row, "reused"


def clean_temporary(root: Path) -> int:
    """Remove what killed runs left under ``root``: ``.tmp-*`` run folders whose job nobody
    holds locked, and ``.tmp-<name>.<pid>.*`` files (:func:`~ffe_gym.manifest.atomic_write`)
    whose writer process is gone; returns how many were removed."""
    removed = 0
    if not root.exists():
        return 0
    for tmp in root.rglob(f"{TEMPORARY}*"):
        if tmp.is_symlink():
            continue
        if tmp.is_file():
            if not _writer_alive(tmp.name):
                tmp.unlink(missing_ok=True)
                removed += 1
            continue
        if not tmp.is_dir():
            continue
        seed = tmp.name[len(TEMPORARY):].rsplit("-", 1)[0]
        lock = tmp.parent / f".{seed}.lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError:
            continue  # a symlinked lock: left alone (the job that needs it reports it)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live run is writing it
        finally:
            os.close(fd)
        remove(tmp)
        removed += 1
    return removed


def _writer_alive(name: str) -> bool:
    """Whether the process that writes the temporary file ``.tmp-<name>.<pid>.<random>``
    still runs (a name of another form counts as alive: left alone)."""
    parts = name.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return True
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


# ------------------------------------------------------------------------------- computing


def _materialise(spec: JobSpec, where: Path) -> dict[str, Any]:
    """Write the spec's input files under ``where`` and point the agent entry at them."""
    agent = copy.deepcopy(spec.agent)
    local: dict[str, Path] = {}
    for name, content in spec.inputs.items():
        path = where / "inputs" / name.lstrip("/").replace("..", "__")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        local[name] = path

    def moved(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value in local:
            return str(local[value])
        prefix = value.rstrip("/") + "/"
        inner = [n for n in local if n.startswith(prefix)]
        if inner:  # a folder (a trained run): its files were shipped one by one
            return str(where / "inputs" / value.lstrip("/").replace("..", "__"))
        return value

    if agent.get("policy"):
        agent["policy"] = moved(agent["policy"])
    agent["kwargs"] = {k: moved(v) for k, v in agent.get("kwargs", {}).items()} | out_kwargs(
        spec)
    if spec.carried:  # the driver's state of this policy (an LLM's reply cache), copied here
        carried = {}
        for role, content in spec.carried.items():
            path = where / "carried" / role
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            carried[role] = str(path)
        agent["kwargs"]["carried"] = carried
    if agent.get("train") and agent["train"].get("agent_config"):
        agent["train"]["agent_config"] = moved(agent["train"]["agent_config"])
    if agent.get("train") and agent["train"].get("from_sweep"):
        agent["train"]["from_sweep"] = moved(agent["train"]["from_sweep"])
    return agent


def out_kwargs(spec: JobSpec) -> dict[str, str]:
    """``{"out": <the comparison's --out>}`` for a policy class that writes its state there
    (``takes_out``: the LLM ensemble's reply cache and assembled models), else {}. Passed
    when the policy is made, never part of the job's identity, so a moved tree is reused."""
    cls = policy_class(spec.agent)
    return {"out": spec.root} if cls is not None and hook(cls, "takes_out") else {}


WARM = "warm-start"  # the inputs folder of a shipped previous-fold model


def warm_start_files(folder: Path) -> dict[str, bytes]:
    """The files of a finished trained job's evaluated model (its ``model/`` folder's manifest,
    the model file it names and the statistics beside it), as job inputs; {} when there is
    none (the job that needs it then fails, naming it)."""
    model = folder / "model"
    try:
        man = json.loads((model / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    chosen = Path(man.get("model", "model.zip"))
    files = {"manifest.json": model / "manifest.json", chosen.as_posix(): model / chosen}
    stats = model / chosen.parent / "vecnormalize.pkl"
    if stats.is_file():
        files[(chosen.parent / "vecnormalize.pkl").as_posix()] = stats
    try:
        return {f"{WARM}/{name}": path.read_bytes() for name, path in files.items()}
    except OSError:
        return {}


def _warm_start(spec: JobSpec, work: Path, models: dict[str, Path] | None) -> Path | None:
    """The run folder a warm-started training starts from: the previous fold's model, trained
    in this chain or shipped as inputs."""
    if not spec.warm_from:
        return None
    if models is not None and spec.warm_from in models:
        return models[spec.warm_from]
    shipped = work / "inputs" / WARM
    if (shipped / "manifest.json").is_file():
        return shipped
    raise RuntimeError(f"warm start: the previous fold's model (train key "
                       f"{spec.warm_from[:12]}, run folder {spec.warm_folder}) is missing; "
                       "did that job fail?")


def _policy(agent: dict[str, Any], spec: JobSpec, cfg: Config, md: MarketData, work: Path,
            models: dict[str, Path] | None = None):
    """The job's policy; a trained agent is trained first, under ``spec.train_config``, or
    taken from ``models`` (the models its chain trained, by ``train_key``: one training per
    agent, fold and seed, evaluated under every variant)."""
    import importlib

    from ffe_gym.evaluation.policy import resolve_policy

    if agent["train"] is None:
        return resolve_policy(agent["policy"], **agent["kwargs"])
    sb3 = importlib.import_module(TRAINER)  # named, not imported: ffe_gym never does
    if models is not None and spec.train_key in models:
        shutil.copytree(models[spec.train_key], work / "model")
        return sb3.load_policy(work / "model", name=agent["name"])
    if spec.train_config is not None:
        cfg = from_dict(Config, copy.deepcopy(spec.train_config))
    t = agent["train"]
    path = t["agent_config"] or sb3.default_agent_config(t["agent"])
    aspec = sb3.load_agent_spec(path, algo=t["agent"])
    if t["n_envs"]:
        aspec.n_envs = t["n_envs"]
    aspec.kwargs.update({k: sb3.schedule(v) for k, v in t["hyperparameters"].items()})
    windows = {k: Window(*v) for k, v in spec.windows.items()}
    sb3.train(aspec, cfg, md, work / "model", seed=spec.seed, timesteps=t["timesteps"],
              progress=False, windows=windows, init=_warm_start(spec, work, models))
    if models is not None and spec.train_key:
        keep = Path(tempfile.mkdtemp(prefix="ffe-model-"))
        shutil.copytree(work / "model", keep / "model")
        models[spec.train_key] = keep / "model"
    return sb3.load_policy(work / "model", name=agent["name"])


def _evaluate(spec: JobSpec, md: MarketData | None, work: Path,
              models: dict[str, Path] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    from ffe_gym.evaluation.audit import diagnose, market_part
    from ffe_gym.evaluation.rollout import env_for, rollout
    from ffe_gym.evaluation.statistics import block_bootstrap_sharpe_ci, sharpe

    cfg = from_dict(Config, copy.deepcopy(spec.config))
    md = md if md is not None else market_for(cfg)
    if md.digest() != spec.data_hash:
        raise RuntimeError(f"the data of {spec.dataset} is not the data the experiment "
                           f"planned with (hash {md.digest()[:12]} != {spec.data_hash[:12]})")
    agent = _materialise(spec, work)
    policy = _policy(agent, spec, cfg, md, work, models)
    diagnostic = None
    try:
        env = env_for(policy, cfg, md)
        start, stop = spec.windows[spec.evaluate]
        markets, keep, width = market_part(env.unwrapped.layout)
        result = rollout(policy, env, window=(start, stop - 1), seed=spec.seed,
                         risk_free=spec.risk_free, observe=keep if spec.diagnostic else None)
        calls = list(hook(policy, "call_log") or [])  # an LLM's, per prompt
        if calls:
            pd.DataFrame(calls).to_csv(work / "llm_calls.csv", index=False)
        if spec.diagnostic:
            diagnostic = diagnose(policy, cfg, md, (start, stop - 1), result, markets, width,
                                  seed=spec.seed, permutation="permutation" in spec.diagnostic,
                                  risk_free=spec.risk_free)
        delta = hook(policy, "carried_delta")() if spec.carried else {}
    finally:
        hook(policy, "close")()
    if result.hindsight and not spec.agent.get("hindsight"):
        raise ValueError(f"agent {spec.agent.get('name')!r} read prices after its decision "
                         f"bars (MarketView.hindsight_close): mark it 'hindsight: true' in the "
                         f"experiment (a labelled bound, never a contender) or remove it")
    eq = result.equity.to_numpy()
    rets = eq[1:] / eq[:-1] - 1.0
    ppy = md.periods_per_year
    ci = (block_bootstrap_sharpe_ci(rets, ppy, reps=500, seed=spec.seed,
                                    risk_free=spec.risk_free)
          if len(rets) >= 3 and np.std(rets) > 0 else (sharpe(rets, ppy), None, None))
    pd.DataFrame({"equity": result.equity, "gross_exposure": result.gross_exposure}).to_csv(
        work / "equity.csv", index_label="time")
    result.trades.to_csv(work / "trades.csv", index=False)
    result.weights.to_csv(work / "weights.csv", index_label="time")
    test = (str(md.index[start]), str(md.index[stop - 1]))
    row = {"experiment": spec.experiment, "dataset": spec.dataset, "variant": spec.variant,
           "fold": spec.fold, "agent": spec.agent["name"], "seed": spec.seed,
           "role": "reference" if spec.is_reference else "agent", "status": result.status,
           "deterministic": spec.deterministic, "hindsight": bool(spec.agent["hindsight"]),
           "decide_every": spec.config["portfolio"]["rebalancing_frequency"],
           "max_positions": spec.config["portfolio"]["max_positions"],
           "window_start": test[0], "window_end": test[1],
           "start": str(result.start), "end": str(result.end), "steps": result.steps,
           "synthetic": result.synthetic, "close_only": list(md.close_only), **result.metrics,
           "holding_bars": holding_bars(result.trades),
           "costs": float(sum(a.fees + a.borrow for a in result.attribution)),
           "sharpe_ci_low": ci[1], "sharpe_ci_high": ci[2],
           "attribution": [asdict(a) for a in result.attribution],
           "refusals": result.refusals, "policy_stats": _with_diagnostic_stats(
               result.policy_stats, diagnostic),
           "diagnostic": _diagnostic_row(diagnostic),
           "identity": spec.identity, "folder": str(spec.folder)}
    row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
           for k, v in row.items()}
    (work / "manifest.json").write_text(json.dumps(manifest(
        config=to_dict(cfg), data_hash=md.digest(), data=md.describe(),
        seeds={"seed": spec.seed},
        extra={"job": asdict(spec) | {"config": None, "inputs": sorted(spec.inputs)}}),
        indent=2, default=str) + "\n")
    return row, delta


def _diagnostic_row(d: Any) -> dict[str, Any] | None:
    """The placebo / permutation record of a job (:class:`~ffe_gym.evaluation.audit.
    Diagnostic`) as metrics.json keeps it; None when the job ran none."""
    if d is None:
        return None
    return {"decisions": d.decisions, "placebo_changed": d.placebo_changed,
            "placebo_metrics": d.placebo_metrics, "permuted_changed": d.permuted_changed,
            "permuted_metrics": d.permuted_metrics, "note": d.note}


def _with_diagnostic_stats(stats: dict[str, Any], d: Any) -> dict[str, Any]:
    """The real run's policy stats; a placebo or permuted run whose replies depended on the
    machine's load (an LLM member timed out there) makes the job unreproducible too."""
    if d is None or not d.unreproducible:
        return stats
    return {**stats, "reproducible": False,
            "unreproducible": list(stats.get("unreproducible", [])) + d.unreproducible}


def holding_bars(trades: pd.DataFrame) -> float | None:
    """Mean bars a position was held: from the fill that opened it (from flat) to the fill
    that closed it, per asset; None when nothing was closed."""
    if trades.empty:
        return None
    spans = []
    for _, t in trades.groupby("asset", sort=False):
        units = 0.0
        opened = None
        for bar, q in zip(t["bar"].to_numpy(), t["units"].to_numpy(), strict=True):
            if units == 0.0 and q != 0.0:
                opened = bar
            units += q
            if abs(units) <= 1e-12 * max(1.0, abs(q)) and opened is not None:
                spans.append(bar - opened)
                units, opened = 0.0, None
    return float(np.mean(spans)) if spans else None


def compute_job(spec: JobSpec, market: MarketData | None = None,
                models: dict[str, Path] | None = None) -> dict[str, Any]:
    """Compute one job in a private temporary folder; never raises for the job's own errors.

    :param models: trained models by ``train_key``, shared by the jobs of one chain (see
        :func:`ffe_gym.evaluation.runner.compute_chain`); a job adds the model it trains.

    :returns: ``{"row": ..., "files": {relative path: bytes}}`` (plus ``"carried"``: the
        policy state a remote job sends home, e.g. new LLM replies), or ``{"error": ...,
        "traceback": ...}`` when the job failed.
    """
    work = Path(tempfile.mkdtemp(prefix="ffe-job-"))
    try:
        row, delta = _evaluate(spec, market, work, models)
        files = {p.relative_to(work).as_posix(): p.read_bytes()
                 for p in sorted(work.rglob("*")) if p.is_file()
                 and p.relative_to(work).parts[0] not in ("inputs", "carried")}
        kept = row | {"folder": relative_folder(spec),
                      "files": {k: file_record(k, v) for k, v in files.items()}}
        files["metrics.json"] = (json.dumps(kept, indent=2, default=str) + "\n").encode()
        return {"row": kept | {"folder": str(spec.folder)}, "files": files} | (
            {"carried": delta} if delta else {})
    except Exception as exc:  # the job's failure is data for the grid, not a crash
        out = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        if isinstance(exc, OSError) and exc.errno in MACHINE_ERRNOS:  # the machine's, not
            out["os_error"] = [exc.errno, exc.strerror, exc.filename]  # the job's: stop
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_job(spec: JobSpec, result: dict[str, Any], root: Path) -> None:
    """Write a computed job's files as its run folder (temporary folder, then a rename)."""
    folder = inside(root, spec.folder)
    work = folder.parent / f"{TEMPORARY}{folder.name}-{os.getpid()}"
    try:
        remove(work)
        for name, content in result["files"].items():
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with named_errors(path):
                path.write_bytes(content)
            os.chmod(path, 0o666 & ~_UMASK)
        os.chmod(work, 0o777 & ~_UMASK)
    except BaseException:  # disk full, interrupted: no half-written folder stays behind
        with contextlib.suppress(OSError):
            remove(work)
        raise
    remove(folder)  # an unfinished, stale or damaged folder (a symlink is unlinked, not followed)
    os.replace(work, folder)


def relative_folder(spec: JobSpec) -> str:
    """A run folder's path inside its experiment's folder (what metrics.json keeps: a tree
    moved or copied elsewhere stays readable)."""
    return spec.folder.relative_to(Path(spec.root) / spec.experiment).as_posix()


def failure_row(spec: JobSpec, error: str, trace: str = "") -> dict[str, Any]:
    """The row of a job that failed: who, where, and the error."""
    return {"experiment": spec.experiment, "dataset": spec.dataset, "variant": spec.variant,
            "fold": spec.fold, "agent": spec.agent["name"], "seed": spec.seed,
            "role": "reference" if spec.is_reference else "agent", "status": "failed",
            "error": error, "traceback": trace, "identity": spec.identity,
            "folder": str(spec.folder), "reuse": "failed"}


def run_job(spec: JobSpec, root: str | Path | None = None) -> dict[str, Any]:
    """Run one job here (or reuse its finished folder) under its lock and return its row;
    ``reuse`` says which: ``reused``, ``new``, ``stale``, ``damaged``, or ``failed``."""
    root = Path(root) if root is not None else Path(spec.root) / spec.experiment
    with JobLock(spec):
        row, state = finished(spec)
        if row is not None:
            return row | {"reuse": state}
        result = compute_job(spec)
        if "error" in result:
            return failure_row(spec, result["error"], result["traceback"])
        write_job(spec, result, root)
        return result["row"] | {"reuse": state}
