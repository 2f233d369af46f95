"""Run the jobs of an experiment on a backend: reuse, claim, compute, write, survive failures.

Backends: ``serial``; ``process`` (a spawn process pool on this machine); ``ray`` (``pip install
'ffe-gym[ray]'``; ``address`` connects to a cluster started with ``ray start``, None starts a
local one; usage stats and the dashboard are off). Whatever the backend:

* a job whose run folder matches its identity is reused, not recomputed;
* the driver claims every job it computes with a lock (:class:`~ffe_gym.evaluation.jobs.
  JobLock`) just before it runs, and looks at it again under the lock, so two comparisons of
  one experiment never compute the same job twice: a job another run holds is waited for and
  then reused. Locks are held only by the jobs in flight (one at a time in ``serial``; the
  chains submitted, at most twice the workers, otherwise), so open files stay bounded
  whatever the grid's size;
* workers compute (:func:`~ffe_gym.evaluation.jobs.compute_job`) and send back the row and the
  files; only the driver writes run folders, so a Ray cluster needs no shared filesystem (the
  market panel travels once per worker, the agent's files inside the spec);
* a job that raises, acts invalidly, or kills its worker process is recorded as failed (with
  agent, variant, dataset, fold, seed and the error) and every other job still completes; the
  jobs a dead pool worker took down with it are run again, one at a time, to find the culprit;
* the variants and seeds of one agent on one window run one after another in the same worker
  (a chain), so an agent whose replies are cached (the LLM ensemble) computes them once, not
  in a race, and a trained agent trains once per seed for every variant it is evaluated
  under (the chain keeps its models in a temporary folder of the worker's own);
* on Ray a policy's own state travels too (:func:`carry`): the LLM ensemble's reply cache goes
  out as a snapshot, the replies a job adds come back, and the driver merges them.

On a cluster::

    ray start --head --port=6379                     # on the head node
    ray start --address=HEAD_IP:6379                 # on every other node
    python scripts/compare.py --backend ray --address HEAD_IP:6379 --out runs

The driver resolves ``--out`` on its own machine and writes every run folder; the nodes need no
shared filesystem. Ray 2.59 and later start clusters with token authentication: ``ray start``
writes ``~/.ray/auth_token`` and the driver turns ``RAY_AUTH_MODE=token`` on when that file (or
``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``) is there; other machines need the same token. Ray
tasks are not retried: a job on a node that dies is recorded as failed and a rerun computes it.
Ray rewrites 127.0.0.1 into the machine's outward address, so nodes on one machine use other
loopback addresses (as the tests do)::

    ray start --head --node-ip-address=127.0.0.2 --port=6391 --num-cpus=1
    ray start --address=127.0.0.2:6391 --node-ip-address=127.0.0.3 --num-cpus=1
    python scripts/compare.py --backend ray --address 127.0.0.2:6391
    ray stop
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ffe_gym.data import MarketData
from ffe_gym.evaluation.experiment import JobSpec, market_for, policy_class
from ffe_gym.evaluation.jobs import (
    JobLock,
    JobLockError,
    clean_temporary,
    compute_job,
    failure_row,
    finished,
    out_kwargs,
    write_job,
)
from ffe_gym.evaluation.policy import hook

BACKENDS = ("serial", "process", "ray")
DEAD_WORKER = ("the worker process died while running this job (os._exit, a signal or out of "
               "memory)")


def chains(specs: Sequence[JobSpec]) -> list[list[int]]:
    """Indices of ``specs`` grouped by (dataset, fold, agent), variants and seeds in order; a
    warm-started agent's jobs by (dataset, agent, seed) instead, folds in order, so each
    fold's training starts from the previous fold's model on every backend."""
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        train = s.agent.get("train") or {}
        if train.get("warm_start"):
            key: tuple = (s.dataset, "warm-start", s.agent["name"], s.seed)
        else:
            key = (s.dataset, s.fold, s.agent["name"], s.is_reference)
        groups.setdefault(key, []).append(i)
    return [sorted(g, key=lambda i: (specs[i].fold, i)) for g in groups.values()]


def ship_warm_starts(specs: list[JobSpec], chain: list[int],
                     trained: Iterable[str] | None = None) -> None:
    """Give each warm-started job of ``chain`` whose previous fold is not trained before it
    in the same chain (``trained``: those train keys; default the chain's own) that fold's
    evaluated model (manifest, model file, normalisation statistics) as inputs, read from its
    run folder here, so a worker anywhere can start from it."""
    from ffe_gym.evaluation.jobs import warm_start_files

    keys = set(trained) if trained is not None else {specs[i].train_key for i in chain}
    for i in chain:
        s = specs[i]
        if s.warm_from and s.warm_from not in keys:
            specs[i] = dataclasses.replace(
                s, inputs={**s.inputs, **warm_start_files(Path(s.warm_folder))})


# ------------------------------------------------------------------------ worker side

_WORKER_MARKETS: dict[str, MarketData] = {}


def _init_worker(markets: dict[str, MarketData]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _WORKER_MARKETS.update(markets)


def compute_chain(specs: Sequence[JobSpec],
                  market: MarketData | None = None) -> list[dict[str, Any]]:
    """Compute jobs one after another (see the module docstring); results in order. The
    models a job trains serve the chain's later jobs with the same ``train_key``."""
    out = []
    with chain_models() as models:
        for s in specs:
            md = market if market is not None else _WORKER_MARKETS.get(s.data_hash)
            out.append(compute_job(s, md, models))
    return out


@contextlib.contextmanager
def chain_models() -> Iterator[dict[str, Path]]:
    """The trained models of one chain, by ``train_key``; their folders go when it ends."""
    models: dict[str, Path] = {}
    try:
        yield models
    finally:
        for path in models.values():
            shutil.rmtree(path.parent, ignore_errors=True)


# ------------------------------------------------------------------------ driver side


class Progress:
    """Per-job progress: a live bar on a terminal, one plain line per job when piped."""

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        self.total, self.count, self.enabled = total, 0, enabled
        self.tty = sys.stdout.isatty()
        self.start = time.monotonic()
        self._bar = None
        if enabled and self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._bar = Progress("[progress.description]{task.description}", BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn())
            self._bar.start()
            self._task = self._bar.add_task(label, total=total)

    def step(self, spec: JobSpec, state: str) -> None:
        self.count += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.advance(self._task)
        else:
            what = f"{spec.dataset}/{spec.variant}/fold{spec.fold}/{spec.agent['name']}/" \
                   f"seed{spec.seed}"
            print(f"[{self.count}/{self.total}] {what}: {state} "
                  f"({time.monotonic() - self.start:.0f} s)", flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def run_jobs(specs: Sequence[JobSpec], backend: str = "serial", workers: int | None = None,
             address: str | None = None, progress: bool = True,
             on_result: Callable[[dict], None] | None = None,
             keep_unreproducible: bool = False) -> list[dict[str, Any]]:
    """Run ``specs`` and return one row per spec, in the order of ``specs``. A row's
    ``reuse`` is ``reused``, ``new``, ``stale``, ``damaged``, ``unreproducible`` (recomputed:
    its stored result depended on the machine's load; ``keep_unreproducible`` reuses it,
    flagged) or ``failed`` (then ``error`` says why). KeyboardInterrupt propagates after the
    workers are stopped and the locks freed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (allowed: {', '.join(BACKENDS)})")
    results: list[dict[str, Any] | None] = [None] * len(specs)
    bar = Progress(len(specs), f"jobs ({backend})", progress)
    roots = {Path(s.root) / s.experiment for s in specs}
    for root in roots:
        clean_temporary(root)
    locks: dict[int, JobLock] = {}

    def done(i: int, row: dict[str, Any]) -> None:
        results[i] = row
        bar.step(specs[i], row["reuse"])
        if on_result is not None:
            on_result(row)

    def finish(i: int, result: dict[str, Any], state: str) -> None:
        spec = specs[i]
        try:
            if "os_error" in result:  # the machine failed (disk full, ...), not the job
                raise OSError(*result["os_error"])
            if "error" in result:
                done(i, failure_row(spec, result["error"], result.get("traceback", "")))
            else:
                write_job(spec, result, Path(spec.root) / spec.experiment)
                if result.get("carried"):  # a remote job's new policy state (LLM replies)
                    hook(policy_class(spec.agent), "merge_carried")(
                        result["carried"], **spec.agent["kwargs"], **out_kwargs(spec))
                done(i, result["row"] | {"reuse": state})
        finally:
            lock = locks.pop(i, None)
            if lock is not None:
                lock.release()

    todo: dict[int, str] = {}
    for i, spec in enumerate(specs):
        row, state = finished(spec, keep_unreproducible)
        if row is not None:
            done(i, row | {"reuse": state})
        else:
            todo[i] = state
    deferred: list[int] = []
    specs = list(specs)

    def claim(g: list[int]) -> list[int]:
        """Lock a chain's jobs just before it runs (open files stay bounded whatever the
        grid's size) and look again under each lock: another run may have finished the job
        since the first pass. Returns the jobs this run computes; a job another run holds is
        waited for at the end, a lock that leads astray fails its job alone."""
        mine = []
        for i in g:
            lock = JobLock(specs[i])
            try:
                got = lock.acquire(block=False)
            except JobLockError as exc:
                done(i, failure_row(specs[i], f"lock {lock.path}: {exc}"))
                continue
            if not got:
                deferred.append(i)
                continue
            row, now = finished(specs[i], keep_unreproducible)
            if row is not None:
                lock.release()
                done(i, row | {"reuse": now})
                continue
            locks[i] = lock
            mine.append(i)
        return mine

    try:
        groups = [[i for i in g if i in todo] for g in chains(specs)]
        groups = [g for g in groups if g]
        if backend == "serial" or not groups:
            for g in groups:
                with chain_models() as models:
                    for i in g:  # one job (one lock) at a time
                        if claim([i]):
                            ship_warm_starts(specs, [i], trained=models)
                            finish(i, compute_job(specs[i], _market(specs[i]), models),
                                   todo[i])
        elif backend == "process":
            _run_process(specs, groups, workers, todo, finish, claim)
        else:
            _run_ray(specs, groups, address, workers, todo, finish, claim)
        for i in deferred:  # held by another run: wait, then reuse what it wrote
            lock = JobLock(specs[i])
            try:
                lock.acquire(block=True)
            except JobLockError as exc:
                done(i, failure_row(specs[i], f"lock {lock.path}: {exc}"))
                continue
            locks[i] = lock
            row, state = finished(specs[i], keep_unreproducible)
            if row is not None:
                locks.pop(i).release()
                done(i, row | {"reuse": state})
            else:
                ship_warm_starts(specs, [i])
                finish(i, compute_job(specs[i], _market(specs[i])), state)
    finally:
        for lock in locks.values():
            lock.release()
        bar.close()
    return [r for r in results if r is not None]


def _market(spec: JobSpec) -> MarketData:
    """The driver's panel of a job (loaded once per data section by ``market_for``)."""
    from ffe_gym.config import Config, from_dict

    return market_for(from_dict(Config, spec.config))


def _markets(specs: Sequence[JobSpec], groups: list[list[int]]) -> dict[str, MarketData]:
    return {specs[g[0]].data_hash: _market(specs[g[0]]) for g in groups}


def _run_process(specs, groups, workers, claimed, finish, claim) -> None:
    n = workers or max(1, (os.cpu_count() or 1))
    markets = _markets(specs, groups)
    ctx = get_context("spawn")

    def pool(size: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=size, mp_context=ctx, initializer=_init_worker,
                                   initargs=(markets,))

    suspects: list[int] = []
    queue = deque(groups)
    executor = pool(n)
    try:
        inflight: dict[Any, list[int]] = {}
        while queue or inflight:
            while queue and not suspects and len(inflight) < 2 * n:
                g = claim(queue.popleft())
                ship_warm_starts(specs, g)
                if g:
                    inflight[executor.submit(compute_chain, [specs[i] for i in g])] = g
            if not inflight:
                continue
            ready, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for f in ready:
                g = inflight.pop(f)
                try:
                    out = f.result()
                except BrokenProcessPool:
                    suspects += g
                    continue
                for i, result in zip(g, out, strict=True):
                    finish(i, result, claimed[i])
            if suspects and inflight:  # the pool is broken: every job in flight comes back
                continue
            if suspects:
                executor.shutdown(wait=False, cancel_futures=True)
                executor = pool(1)
                _isolate(specs, suspects, claimed, finish, executor, pool)
                suspects = []
                executor.shutdown(wait=True)
                executor = pool(n)
    except BaseException:
        _stop(executor)
        raise
    executor.shutdown(wait=True)


def _isolate(specs, suspects, claimed, finish, executor, pool) -> None:
    """Run the jobs a dead worker took down one at a time; a job that kills its worker again
    is the culprit and fails, the others complete."""
    for i in suspects:
        try:
            result = executor.submit(compute_chain, [specs[i]]).result()[0]
        except BrokenProcessPool:
            executor.shutdown(wait=False, cancel_futures=True)
            executor = pool(1)
            result = {"error": DEAD_WORKER}
        finish(i, result, claimed[i])
    executor.shutdown(wait=True)


def _stop(executor: ProcessPoolExecutor) -> None:
    """Stop a pool now (Ctrl-C): cancel what waits, end the workers that run."""
    processes = list(getattr(executor, "_processes", {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(timeout=5)


def init_ray(address: str | None, workers: int | None) -> bool:
    """Connect to the cluster at ``address`` (or start a local Ray with ``workers`` CPUs);
    usage stats, the dashboard and driver logging off. True when this call started it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ImportError("the ray backend needs ray: pip install 'ffe-gym[ray]'") from None
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
    if address is None and workers:
        kwargs["num_cpus"] = workers
    if address is not None:
        _ray_auth_env()
        host = address.rsplit(":", 1)[0]
        if host.startswith("127."):  # a loopback cluster: the driver is that node too
            kwargs["_node_ip_address"] = host
    ray.init(address=address, **kwargs)
    return True


def _run_ray(specs, groups, address, workers, claimed, finish, claim) -> None:
    import ray

    started = init_ray(address, workers)
    try:
        markets = {h: ray.put(md) for h, md in _markets(specs, groups).items()}
        remote = ray.remote(num_cpus=1, max_retries=0)(compute_chain)
        limit = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))  # chains in flight
        queue = deque(groups)
        refs: dict[Any, list[int]] = {}
        while queue or refs:
            while queue and len(refs) < limit:
                g = claim(queue.popleft())
                ship_warm_starts(specs, g)
                if g:
                    spec_list = [carry(specs[i]) for i in g]
                    refs[remote.remote(spec_list, markets[specs[g[0]].data_hash])] = g
            if not refs:
                continue
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                g = refs.pop(ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as exc:  # a dead worker or node
                    out = [{"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
                           for _ in g]
                for i, result in zip(g, out, strict=True):
                    finish(i, result, claimed[i])
    finally:
        if started:
            ray.shutdown()


def carry(spec: JobSpec) -> JobSpec:
    """``spec`` with the driver's state of its policy attached (``carry_state``: an LLM
    ensemble's reply cache), for a node that may not share the driver's filesystem; the job
    sends what it added back (``carried_delta``) and the driver merges it
    (``merge_carried``), so replays stay exact on a cluster."""
    cls = policy_class(spec.agent)
    if cls is None:
        return spec
    state = hook(cls, "carry_state")(**spec.agent["kwargs"], **out_kwargs(spec))
    return dataclasses.replace(spec, carried=state) if state else spec


def _ray_auth_env() -> None:
    """A cluster started by ``ray start`` (Ray >= 2.59) expects token authentication: use it
    when a token is there and the user has not chosen (``RAY_AUTH_MODE``)."""
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN")
                                              or token.is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"
