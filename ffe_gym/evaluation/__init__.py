"""Evaluation: policies, rollouts, and comparisons that say what stands behind them.

``rollout(policy, env, window, seed)`` runs one episode and returns an :class:`EpisodeResult`
(per-bar equity, trades, attribution, refusals, metrics); :mod:`~ffe_gym.evaluation.run_page`
writes it as files and a page. ``compare`` runs an experiment grid. How a comparison is built:

**Experiments** (:mod:`~ffe_gym.evaluation.experiment`, ``configs/experiments/*.yaml``): agents
(a registered name, ``"module:Class"``, a model folder, or ``train: {agent: ppo, timesteps:
...}``) x rule variants x seeds x datasets x walk-forward folds (train | embargo | validation |
embargo | test; the embargo defaults to the longest lookback, the VaR window included). Every
policy meets the same data, costs, limits and capital on every test window; an agent may only
choose how often it decides (``decide_every``; stops still run on every bar). ``score`` names
the metric (Sharpe by default), ``risk_free`` a constant annual rate.

**The reference** (``reference: market`` or ``ucrp``) runs once per dataset and window with the
experiment's data, fills and costs and every risk and portfolio limit off: ``market`` buys
equal weights once and holds, ``ucrp`` rebalances to them at every decision. A score is an
agent's metric minus the reference's on the same window. Every run has a score: a flat curve's
Sharpe is 0, so an agent that sits in cash is scored in every window it sits out. ``index:
{source: skfolio, symbol: SP500}`` adds a second line (that series bought and held, no costs);
scores stay against the reference.

**Controls** (``controls: true``, the default): ``cash`` and, for each trained agent,
``<name>-untrained`` (same architecture, config and seeds, 0 steps). Each agent's paired
per-window difference of scores against them has a bootstrap interval; one containing 0 is
flagged "not distinguishable from doing nothing" or "from untrained". Rows need at least 8
windows with a score to be ranked.

**Variants** are named config overrides (``no_var: {portfolio: {max_portfolio_risk: null}}``);
every agent runs under every variant on the same windows. A variant changes rules only, so one
reference serves them all. A trained agent trains once per (fold, seed) under
``train_variant`` (default: the first variant) and is evaluated under every variant
(``train_per_variant: true`` trains one per variant); ``warm_start: true`` starts each fold
from the previous fold's model when that stays causal (checked).

**Runs**: a policy class that declares ``deterministic = True`` runs once per window; seeds
multiply only stochastic agents. A stochastic agent whose seeds all agree is flagged, and a run
whose result depended on the machine's load (an LLM member cut off at its deadline) is flagged
NOT REPRODUCIBLE and recomputed rather than reused, unless ``--keep-unreproducible``.

**Diagnostics** (:mod:`~ffe_gym.evaluation.audit`): ``diagnostic: [placebo, permutation]`` on an
agent runs, in every window of the first variant, a placebo (each decision sees another
decision's market features of the same window, its own book kept) and a run with the columns
rotated. Flags: "IGNORES ITS INPUT" (fewer than 5% of decisions change), "no evidence that it
uses its input" (the interval of real - placebo contains 0), "DEPENDS ON THE ORDER OF THE
ASSETS". A policy that reads prices through ``MarketView`` is not reached by the placebo and
says so. A policy that reads the future (``MarketView.hindsight_close``: ``bcrp``) fails its
job unless its entry says ``hindsight: true``, and is then a labelled bound, never a contender.

**Jobs** (:mod:`~ffe_gym.evaluation.jobs`, :mod:`~ffe_gym.evaluation.runner`) are pure functions
of a spec whose identity hashes everything that determines the result: the resolved config,
the data, the agent entry with the content of every file it names, the windows, the seed, the
version and a digest of the code the job runs (:mod:`ffe_gym.sources`). Each writes
``<out>/<experiment>/<dataset>/<variant>/fold<k>/<agent>/seed<s>/`` (metrics, equity, trades,
weights, manifest, the trained model, an LLM's ``llm_calls.csv``); a finished job is reused
only when its identity matches and every file checks out against the sizes and SHA-256 that
``metrics.json`` records, so a changed fee recomputes exactly the jobs it touches.

**Faults**: a job killed mid-run loses only itself (rerun the command: the rest is reused);
Ctrl-C ends with one line and exit code 130 (a comparison started in the background has SIGINT
ignored by its shell: stop it with ``kill -TERM``); two comparisons of one experiment claim
jobs with locks and never compute one twice; a failing job is recorded with its coordinates
and error, every other job completes, and the exit code is 1; a damaged or stale folder is
recomputed, never shown, and ``compare --verify`` lists them without computing; run trees can
be moved or copied (paths inside are relative); a full disk, a read-only folder, a file-size
or open-file limit ends the command in one line naming the path (exit 2), and no half-written
file is left. Names of experiments, datasets, variants and agents are folder names (letters,
digits, ``_ . + -``, at most 100 characters); nothing is written outside the output folder.
Everything knowable before a job runs (finite numbers, fold sizes, loadable policies) is
checked at load time, naming its key. Experiment files and run folders are code: a
``"module:Class"`` is imported and a model is a pickle; trust them as you would a script.

**Statistics** (:mod:`~ffe_gym.evaluation.statistics`, after "Deep RL at the Edge of the
Statistical Precipice"): the interquartile mean with two-stage bootstrap intervals (windows,
then runs within a window), the probability of improvement, performance profiles; per run a
moving-block bootstrap interval for the Sharpe ratio; per configuration the deflated Sharpe
ratio of its pooled test returns against the configurations tried; Hansen's SPA and
Romano-Wolf StepM (``arch.bootstrap``, stationary bootstrap, block length by Politis and
White) over everything tried, on a loss consistent with the score (for Sharpe, returns scaled
per window to the reference's volatility).

**Reports** in ``<out>/<experiment>/``: ``results.csv`` (every run), ``summary.csv`` and
``summary.json``, and ``report.html`` (one self-contained page, checked in headless Chromium):
failures first, the table with every caveat, interval plots, window dates, rule-variant
effects, costs, turnover, exposure, trade statistics and refusals by limit, the language
models' calls, learning curves, equity per window with the reference, attribution, every run,
and the fully resolved config of every dataset and variant.
"""

from ffe_gym.evaluation.policy import REGISTRY, Policy, PolicyError, resolve_policy
from ffe_gym.evaluation.rollout import EpisodeResult, env_for, rollout

__all__ = ["REGISTRY", "EpisodeResult", "Policy", "PolicyError", "env_for", "resolve_policy",
           "rollout"]
