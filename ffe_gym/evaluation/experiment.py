"""Experiments: agents x variants x seeds x datasets x walk-forward folds, as independent jobs.

An experiment YAML (``configs/experiments/*.yaml``)::

    name: default
    config: {risk: {on_portfolio_stop: flat}}      # the same data, costs and limits for all
    datasets: [{name: indices, data: {source: arch, symbols: [SPX, IXIC, WTI]}}]
    folds: {n_folds: 12, train: 1000, validation: 252, test: 252}  # embargo: longest lookback
    seeds: [0, 1]                  # deterministic agents run once per window, on the first seed
    reference: market              # or ucrp; scores are the agent's metric minus the reference's
    score: sharpe
    risk_free: 0.0                 # constant annual rate for Sharpe and Sortino
    rules: seed rules              # what the base rule set is called in tables
    variants: {seed_rules: {}, no_var: {portfolio: {max_portfolio_risk: null}}}
    agents:
      - {name: momentum, policy: momentum}
      - {name: ppo, train: {agent: ppo, timesteps: 8000, n_envs: 4}}
      - {name: llm, policy: llm-ensemble, kwargs: {config: configs/agents/llm_embedded.yaml},
         decide_every: 63}

Each job is a pure function of a picklable :class:`JobSpec`: it builds its data, trains its
agent where one is trained (on the fold's train window, validated on its validation window),
evaluates on the fold's test window, and writes
``<root>/<experiment>/<dataset>/<variant>/fold<k>/<agent>/seed<s>/`` (metrics.json, equity.csv,
trades.csv, weights.csv, manifest.json, the model) atomically: into a temporary folder, renamed
when complete. The reference runs once per dataset and fold under
``<dataset>/reference/fold<k>/<market|ucrp>/``: the same window, data, fills and costs, and no
risk or portfolio limit at all (the same reference for every variant, so variants may change
rules but not ``data`` or ``execution``).

A job's identity is a hash of everything that determines its result: the resolved config
(variant and ``decide_every`` included), the data hash, the agent entry with the content of
every file it names (agent YAML, LLM config), the windows, the seed, the risk-free rate, the
package version and a digest of the source the job runs (:func:`code_modules`: other code
never reuses a result, and a change in code the job never runs keeps it).
A finished job is reused only when its stored identity matches and its files are there;
otherwise it is computed again. Agents are named by strings (``ffe_gym`` never imports
``ffe_agents``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ffe_gym.config import Config, ConfigError, from_dict, load_yaml_as, merge, to_dict
from ffe_gym.data import MarketData, market_from_config
from ffe_gym.data.splits import Fold, walk_forward
from ffe_gym.evaluation.policy import REGISTRY, _load, hook
from ffe_gym.features import lookback
from ffe_gym.metrics import METRIC_NAMES
from ffe_gym.portfolio.rules import rules_off
from ffe_gym.sources import digest_of, named_modules

REFERENCES = {"market": "buy-and-hold", "ucrp": "equal-weight"}
REFERENCE_TEXT = {
    "market": "market: equal weights bought once and held (the OLPS literature's 'Market')",
    "ucrp": "ucrp: equal weights rebalanced at every decision",
}
# every risk and portfolio limit off (each rule's declared "off": ffe_gym.portfolio.rules);
# fills, costs, capital, margin and cadence stay the experiment's
RULES_OFF: dict[str, Any] = rules_off()
SCORES = tuple(m for m in METRIC_NAMES if m not in ("bars", "trades", "fills"))
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
NAME_MAX = 100  # characters: a folder name, with room for the temporary folder's suffix


def check_name(name: str, where: str) -> str:
    """A name used as a folder: letters, digits, ``_ . + -``; no separators, no ``..``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name \
            or len(name) > NAME_MAX:
        raise ConfigError(f"{where}: {name!r} is not a safe name (letters, digits and _ . + -, "
                          f"starting with a letter or digit, at most {NAME_MAX} characters; "
                          "no '/' or '..')")
    return name


@dataclass
class DatasetSpec:
    name: str
    data: dict[str, Any] = field(default_factory=dict)  # the ``data`` section for this dataset

    def __post_init__(self) -> None:
        check_name(self.name, "datasets.name")


@dataclass
class FoldSpec:
    n_folds: int = 2
    train: int = 3000
    validation: int = 600
    test: int = 600
    embargo: int | None = None  # bars; None: the longest lookback of the config
    anchored: bool = False

    def __post_init__(self) -> None:
        for key in ("n_folds", "train", "validation", "test"):
            if getattr(self, key) < 1:
                raise ConfigError(f"folds.{key}: {getattr(self, key)} (at least 1)")
        if self.embargo is not None and self.embargo < 0:
            raise ConfigError(f"folds.embargo: {self.embargo} (at least 0, or null: the "
                              "longest lookback)")


@dataclass
class SweepSpace:
    """A Ray Tune search over hyperparameters, scored on fold 0's validation window."""

    trials: int = 8
    space: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # {name: {kind: args}}


@dataclass
class TrainSpec:
    agent: str  # ppo, a2c, sac, td3, dqn, recurrent_ppo
    timesteps: int
    agent_config: str | None = None  # default configs/agents/<agent>.yaml
    n_envs: int | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    sweep: SweepSpace | None = None  # what `scripts/sweep.py` searches
    from_sweep: str | None = None  # a sweep's result file: its winning hyperparameters
    trials: int = 1  # configurations tried to choose these hyperparameters (for the DSR)
    # start each fold's training from the previous fold's evaluated model (same seed); causal
    # while the previous fold's validation window ends an embargo before this fold's test
    warm_start: bool = False


@dataclass
class AgentEntry:
    name: str
    policy: str | None = None  # a registered name, "module:Class"; None when trained
    kwargs: dict[str, Any] = field(default_factory=dict)
    train: TrainSpec | None = None
    decide_every: Any = None  # bars or an offset: how often this agent decides (stops: every bar)
    deterministic: bool | None = None  # None: as the policy class declares
    hindsight: bool = False  # sees its test window: a labelled bound, never a contender
    # a control: "cash" (doing nothing), or the name of the trained agent this is the
    # untrained twin of (same architecture and seed, 0 steps); added by the experiment
    control: str | None = None
    # does the policy use its data? [placebo] and/or [permutation], run beside its real run in
    # every window of the first variant (ffe_gym.evaluation.audit; flags in the table)
    diagnostic: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_name(self.name, "agents.name")
        bad = [d for d in self.diagnostic if d not in ("placebo", "permutation")]
        if bad:
            raise ConfigError(f"agents.{self.name}.diagnostic: unknown check {bad[0]!r} "
                              "(allowed: placebo, permutation)")
        if (self.policy is None) == (self.train is None):
            raise ConfigError(f"agents.{self.name}: give exactly one of policy or train")


@dataclass
class ExperimentConfig:
    name: str
    datasets: list[DatasetSpec]
    agents: list[AgentEntry]
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    folds: FoldSpec = field(default_factory=FoldSpec)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    reference: Literal["market", "ucrp"] = "market"
    score: str = "sharpe"
    risk_free: float = 0.0
    rules: str = "the experiment's rules"
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {"rules": {}})
    controls: bool = True  # add `cash` and every trained agent's untrained twin (see below)
    # a second reference line, e.g. {source: skfolio, symbol: SP500}: that series bought at
    # each test window's first close and held (no costs: an index is a yardstick, not a
    # trade), shown beside the reference; scores stay against ``reference``
    index: dict[str, str] | None = None
    # the variant whose rules trained agents train under (None: the first variant); each
    # (agent, fold, seed) trains once and that model is evaluated under every variant.
    # train_per_variant: every variant trains its own model under its own rules instead
    train_variant: str | None = None
    train_per_variant: bool = False

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        if self.controls:
            self._add_controls()
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ConfigError("agents: names must be unique")
        if "reference" in names:
            raise ConfigError("agents: 'reference' is reserved for the reference run")
        if not self.seeds:
            raise ConfigError("seeds: give at least one seed")
        bad = [s for s in self.seeds if s < 0]
        if bad:
            raise ConfigError(f"seeds: {bad[0]} (seeds are integers >= 0)")
        for a in self.agents:  # a policy that cannot be loaded fails here, not in every job
            if a.policy is not None and (a.policy in _registered() or ":" in a.policy) \
                    and not Path(a.policy).exists():
                try:
                    _policy_class(a.policy)
                except Exception as exc:  # PolicyError, or the module's own import error
                    raise ConfigError(f"agents.{a.name}.policy: {exc}") from None
            elif a.policy is not None and not Path(a.policy).exists():
                raise ConfigError(f"agents.{a.name}.policy: {a.policy!r} is not a registered "
                                  f"name ({', '.join(_registered())}), a 'module:Class', "
                                  "or a saved model's folder")
        if self.score not in SCORES:
            raise ConfigError(f"score: {self.score!r} is not a metric (allowed: "
                              f"{', '.join(SCORES)})")
        if not self.variants:
            raise ConfigError("variants: give at least one (an empty override is the base rules)")
        if self.index is not None and set(self.index) != {"source", "symbol"}:
            raise ConfigError(f"index: give exactly source and symbol, e.g. {{source: "
                              f"skfolio, symbol: SP500}} (got {sorted(self.index)})")
        if self.train_variant is not None and self.train_variant not in self.variants:
            raise ConfigError(f"train_variant: {self.train_variant!r} is not a variant "
                              f"(have: {', '.join(self.variants)})")
        for v, over in self.variants.items():
            check_name(v, "variants")
            if v == "reference":
                raise ConfigError("variants: 'reference' is reserved for the reference run")
            touched = sorted({"data", "execution"} & set(over or {}))
            if touched:
                raise ConfigError(f"variants.{v}: changes {touched[0]!r}; a variant changes "
                                  "rules only (every variant is scored against one reference "
                                  "with the experiment's data, fills and costs)")


    def _add_controls(self) -> None:
        """The controls every table shows: ``cash`` (doing nothing; an agent whose policy is
        ``cash`` serves), and for each trained agent its untrained twin ``<name>-untrained``
        (the same architecture, config and seeds, trained for 0 steps). An agent whose paired
        per-window interval against one of them contains 0 is not distinguishable from it."""
        names = {a.name for a in self.agents}
        cash = [a for a in self.agents if a.policy == "cash"]
        for a in cash:
            a.control = "cash"
        if not cash:
            if "cash" in names:
                raise ConfigError("agents: 'cash' is the doing-nothing control's name; give "
                                  "it policy: cash or rename the agent")
            self.agents.insert(0, AgentEntry(name="cash", policy="cash", control="cash"))
        for a in list(self.agents):
            if a.train is None or a.control is not None:
                continue
            twin = f"{a.name}-untrained"
            if twin in names:
                continue
            train = TrainSpec(**{**asdict(a.train), "timesteps": 0, "sweep": None,
                                 "warm_start": False})
            train.hyperparameters = dict(a.train.hyperparameters)
            self.agents.append(AgentEntry(name=twin, train=train, control=a.name,
                                          decide_every=a.decide_every))


def index_covers(exp: ExperimentConfig, md: MarketData, windows: list[Any]) -> None:
    """The experiment's index line (``index``) loads and has prices over every test window of
    ``md``; else ConfigError naming ``index``."""
    from ffe_gym.data import DataError, load_market

    try:
        index = load_market(exp.index["source"], symbols=[exp.index["symbol"]]).index
    except DataError as exc:
        raise ConfigError(f"index: {exc}") from None
    for w in windows:
        first, last = md.index[w.start], md.index[w.stop - 1]
        if index[0] > first or index[-1] < last:
            raise ConfigError(f"index: {exp.index['symbol']} has prices "
                              f"{index[0].date()} .. {index[-1].date()}, not over the test "
                              f"window {first.date()} .. {last.date()}")


def load_experiment(path: str | Path) -> ExperimentConfig:
    exp = load_yaml_as(ExperimentConfig, path, "experiment")
    for d in exp.datasets:  # check every dataset's and variant's config now, not in a worker
        for v in exp.variants:
            variant_config(exp, d, v)
    return exp


def dataset_config(exp: ExperimentConfig, dataset: DatasetSpec) -> Config:
    try:
        return from_dict(Config, merge(exp.config, {"data": dataset.data}))
    except ConfigError as exc:
        raise ConfigError(f"datasets.{dataset.name}: {exc}") from None


def variant_config(exp: ExperimentConfig, dataset: DatasetSpec, variant: str) -> Config:
    base = to_dict(dataset_config(exp, dataset))
    try:
        return from_dict(Config, merge(base, exp.variants[variant] or {}))
    except ConfigError as exc:
        raise ConfigError(f"variants.{variant} (dataset {dataset.name}): {exc}") from None


def rules_text(cfg: Config) -> str:
    """Every rule of a resolved config with its value, ``off`` where disabled: what a table's
    "Rules:" line says (generated, so it cannot disagree with what ran)."""
    pf, rk, sz = cfg.portfolio, cfg.risk, cfg.sizing

    def level(x: float | None, what: str) -> str:
        if x is None:
            return f"{what} off"
        return (f"{what} {x:g} sigma" if rk.stop_mode == "volatility"
                else f"{what} {x * 100:g}%")

    if pf.max_portfolio_risk is None:
        var = "VaR limit off"
    else:
        ahead = ("one decision interval" if rk.var_horizon_bars is None
                 else f"{rk.var_horizon_bars} bar{'s' if rk.var_horizon_bars != 1 else ''}")
        var = (f"{rk.var_confidence * 100:g}% {rk.var_method} VaR over {ahead} <= "
               f"{pf.max_portfolio_risk * 100:g}% of equity")
    if pf.max_drawdown is None:
        dd = "drawdown stop off"
    else:
        then = ("then flat for " + f"{rk.cooldown_bars} bars" if rk.on_portfolio_stop == "flat"
                else "then the episode ends")
        dd = f"{pf.max_drawdown * 100:g}% drawdown stop from the {rk.drawdown_reference} ({then})"
    sizing = (f"openings {sz.risk_per_trade * 100:g}% of equity at risk to the stop"
              if sz.base == "risk" else f"openings {sz.risk_per_trade * 100:g}% of equity")
    corr = ("correlation sizing off" if pf.correlation_threshold is None
            else f"correlation sizing above {pf.correlation_threshold:g}")
    parts = [level(rk.stop_loss, "stop-loss"), level(rk.take_profit, "take-profit"),
             f"{sizing} ({pf.position_sizing.replace('_', ' ')})", corr,
             "max positions off" if pf.max_positions is None
             else f"max {pf.max_positions} positions", var, dd,
             "gross cap off" if rk.max_gross_exposure is None
             else f"gross <= {rk.max_gross_exposure:g}x equity",
             "shorts off" if not rk.allow_short else
             ("short cap off" if rk.max_short_exposure is None
              else f"shorts <= {rk.max_short_exposure:g}x equity")]
    if rk.reentry_bars != 0 and (rk.stop_loss is not None or rk.take_profit is not None):
        parts.append("no re-entry for one decision after a stop or target"
                     if rk.reentry_bars is None
                     else f"no re-entry for {rk.reentry_bars} bars after a stop or target")
    return ", ".join(parts)


def reference_config(cfg: Config) -> Config:
    """``cfg`` with every risk and portfolio limit off (fills, costs and cadence kept)."""
    return from_dict(Config, merge(to_dict(cfg), RULES_OFF))


@dataclass(frozen=True)
class JobSpec:
    """Everything one job needs; picklable, so any backend can run it."""

    root: str
    experiment: str
    dataset: str
    variant: str  # "reference" for the reference run
    config: dict[str, Any]  # the resolved Config as a dict
    fold: int
    windows: dict[str, tuple[int, int]]
    agent: dict[str, Any]  # an AgentEntry as a dict
    seed: int
    risk_free: float = 0.0
    data_hash: str = ""
    identity: str = ""
    deterministic: bool = False
    inputs: dict[str, bytes] = field(default_factory=dict)  # files the agent names: path -> bytes
    evaluate: str = "test"  # the window the policy is scored on; sweeps score on validation
    carried: dict[str, bytes] = field(default_factory=dict)  # policy state for a remote job
    # a trained agent: the resolved config it trains under (its train_variant's) and the key
    # of that training (identical for every variant it is evaluated under)
    train_config: dict[str, Any] | None = None
    train_key: str = ""
    # a warm-started training: the previous fold's train_key, and that job's run folder (its
    # model, shipped as inputs when it was computed before this chain)
    warm_from: str = ""
    warm_folder: str = ""
    diagnostic: tuple[str, ...] = ()  # the checks this job runs beside its real run

    @property
    def folder(self) -> Path:
        return (Path(self.root) / self.experiment / self.dataset / self.variant
                / f"fold{self.fold}" / self.agent["name"] / f"seed{self.seed}")

    @property
    def is_reference(self) -> bool:
        return self.variant == "reference"


def embargo_for(cfg: Config) -> int:
    return max(cfg.env.window, lookback(cfg.env.features), cfg.portfolio.correlation_window,
               cfg.risk.var_window, cfg.sizing.volatility_window)


_MARKETS: dict[str, MarketData] = {}


def market_for(cfg: Config) -> MarketData:
    """The panel of ``cfg.data``, loaded once per process."""
    key = json.dumps(to_dict(cfg.data), sort_keys=True)
    if key not in _MARKETS:
        _MARKETS[key] = market_from_config(cfg.data)
    return _MARKETS[key]


def folds_for(exp: ExperimentConfig, cfg: Config, md: MarketData) -> list[Fold]:
    f = exp.folds
    gap = f.embargo if f.embargo is not None else embargo_for(cfg)
    return walk_forward(md.n_bars, n_folds=f.n_folds, train=f.train, validation=f.validation,
                        test=f.test, embargo=gap, anchored=f.anchored)


def policy_class(agent: dict[str, Any]) -> Any:
    """The class of a job's policy (None for a trained agent or a saved model's folder)."""
    if agent.get("train") or not agent.get("policy"):
        return None
    return _policy_class(agent["policy"])


def _registered() -> list[str]:
    """The registered short policy names."""
    return list(REGISTRY)


def _policy_class(spec: str) -> Any:
    target = REGISTRY.get(spec, spec)
    if ":" in target and not Path(spec).exists():
        return _load(target)
    return None  # a saved model's folder


def is_deterministic(agent: AgentEntry) -> bool:
    """Whether an agent's result is a function of its inputs alone (one run per window).

    The entry's ``deterministic`` wins; a trained agent is stochastic (its seed changes the
    training); a saved model evaluated greedily is deterministic; otherwise the policy class's
    ``deterministic`` attribute (False when it has none)."""
    if agent.deterministic is not None:
        return agent.deterministic
    if agent.train is not None:
        return False
    cls = _policy_class(agent.policy)
    return True if cls is None else bool(hook(cls, "deterministic"))


SKIP_DIRS = ("tb", "checkpoints")  # a trained run's logs: they do not change an evaluation


def agent_files(agent: AgentEntry) -> dict[str, bytes]:
    """The content of every file an agent entry names, keyed by the name it uses: its agent
    YAML, file-valued kwargs (an LLM config), and a trained run's folder (every file but its
    TensorBoard logs and checkpoints). They travel with the job and enter its identity."""
    named: list[str] = []
    if agent.train is not None:
        if agent.train.from_sweep:
            named.append(agent.train.from_sweep)
        if agent.train.agent_config:
            named.append(agent.train.agent_config)
        else:
            sb3 = importlib.import_module(TRAINER)
            agent.train.agent_config = str(sb3.default_agent_config(agent.train.agent))
            named.append(agent.train.agent_config)
    folder = agent.policy if agent.policy is not None and ":" not in agent.policy else None
    if folder is not None:
        named.append(folder)
    named += [v for v in agent.kwargs.values() if isinstance(v, str) and len(v) < 4096]
    out: dict[str, bytes] = {}
    for name in named:
        path = Path(name)
        if path.is_file():
            out[name] = path.read_bytes()
        elif path.is_dir() and name == folder:  # a trained run; a folder kwarg is not shipped
            for f in sorted(path.rglob("*")):
                rel = f.relative_to(path)
                if f.is_file() and rel.parts[0] not in SKIP_DIRS:
                    out[f"{name.rstrip('/')}/{rel.as_posix()}"] = f.read_bytes()
    return out


def apply_sweep(agent: AgentEntry) -> None:
    """Take the winning hyperparameters and the number of trials from a sweep's result file
    (``train.from_sweep``, written by ``scripts/sweep.py``); the file enters the identity."""
    from ffe_gym.config import read_yaml

    path = agent.train.from_sweep
    result = read_yaml(path, "sweep result")
    if not isinstance(result, dict) or "best" not in result or "trials" not in result:
        raise ConfigError(f"{path}: not a sweep result (needs 'best' and 'trials')")
    if result.get("agent") not in (None, agent.train.agent):
        raise ConfigError(f"{path}: a sweep of {result['agent']!r}, not {agent.train.agent!r}")
    agent.train.hyperparameters = {**result["best"], **agent.train.hyperparameters}
    agent.train.trials = int(result["trials"])


def digests_of(files: dict[str, bytes]) -> dict[str, str]:
    """sha256 of each file's content: what a job's identity holds of the files it names."""
    return {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


def _file_digests(agent: AgentEntry) -> dict[str, str]:
    return digests_of(agent_files(agent))


def warm_causal(agent: str, previous: Fold, fold: Fold, embargo: int) -> None:
    """A warm start is causal when everything the previous fold's model saw (its training
    and validation windows: the evaluated model is the best on validation) ends at least
    ``embargo`` bars before this fold's test window; ConfigError otherwise."""
    if previous.validation.stop + embargo > fold.test.start:
        raise ConfigError(
            f"agents.{agent}.train.warm_start: fold {fold.index}'s model would start from fold "
            f"{previous.index}'s, which saw bars up to {previous.validation.stop - 1}, closer "
            f"than the embargo ({embargo} bars) to fold {fold.index}'s test window (from bar "
            f"{fold.test.start}); warm starts need folds that move forward by at least the "
            "validation window and the embargo")


def job_identity(config: dict[str, Any], data_hash: str, agent: AgentEntry,
                 windows: dict[str, tuple[int, int]], seed: int, risk_free: float,
                 digests: dict[str, str], train_config: dict[str, Any] | None = None) -> str:
    """sha256 over everything that determines a job's result (see the module docstring);
    ``train_config``: the config a trained agent trains under, when not ``config``."""
    from ffe_gym import __version__

    payload = {"version": __version__, "code": code_digest(agent, config), "config": config,
               "data": data_hash,
               "agent": asdict(agent), "files": digests, "windows": windows, "seed": seed,
               "risk_free": risk_free}
    if train_config is not None and train_config != config:
        payload["train_config"] = train_config
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# trains and loads SB3 agents; named, never imported by ffe_gym at module level, and added to
# the code of the jobs that run it (a trained agent or a saved model: code_modules), so a change
# there recomputes those jobs and no other
TRAINER = "ffe_agents.sb3"
JOB_CODE = ("ffe_gym.evaluation.runner",)  # computes a job: chain, rollout, env, engine, statistics


def code_modules(agent: AgentEntry, config: dict[str, Any]) -> tuple[str, ...]:
    """The project modules a job of ``agent`` under ``config`` runs: the code that computes a
    job, the policy's module (``ffe_agents.sb3`` for a trained agent or a saved model), and any
    module a ``"module:attr"`` string of the config or agent names (a custom feature, reward or
    policy), each with everything it imports (:mod:`ffe_gym.sources`)."""
    named = named_modules(config, asdict(agent))
    if agent.train is not None or (agent.policy is not None and ":" not in agent.policy
                                   and agent.policy not in REGISTRY):
        named.add(TRAINER)
    elif agent.policy in REGISTRY:
        named |= named_modules(REGISTRY[agent.policy])
    return tuple(sorted(set(JOB_CODE) | named))


def code_digest(agent: AgentEntry, config: dict[str, Any]) -> str:
    """SHA-256 of the sources (and runtime files) of :func:`code_modules`: part of a job's
    identity, so a result computed by other code is never reused and a change in code the job
    never runs (a report, another policy) reuses it."""
    return digest_of(code_modules(agent, config))


def _agent_config(cfg: Config, agent: AgentEntry) -> Config:
    if agent.decide_every is None:
        return cfg
    try:
        return from_dict(Config, merge(to_dict(cfg), {
            "portfolio": {"rebalancing_frequency": agent.decide_every}}))
    except ConfigError as exc:
        raise ConfigError(f"agents.{agent.name}.decide_every: {exc}") from None


def jobs(exp: ExperimentConfig, root: str | Path) -> list[JobSpec]:
    """Every job of the experiment, in a stable order: per dataset and fold the reference,
    then every variant x agent x seed (one seed for a deterministic agent)."""
    out = []
    root = Path(root).absolute()  # resolved on the driver: workers may run anywhere
    ref_agent = AgentEntry(name=exp.reference, policy=REFERENCES[exp.reference],
                           deterministic=True)
    for a in exp.agents:
        if a.train is not None and a.train.from_sweep:
            apply_sweep(a)
    files = {a.name: agent_files(a) for a in exp.agents}
    digests = {k: digests_of(f) for k, f in files.items()}
    for a in exp.agents:  # what a policy's models are (a GGUF file named by path, ...)
        cls = policy_class(asdict(a))
        if cls is not None:
            where = {"out": str(root)} if hook(cls, "takes_out") else {}
            digests[a.name] |= hook(cls, "identity_digests")(**a.kwargs, **where)
    for d in exp.datasets:
        base = dataset_config(exp, d)
        md = market_for(base)
        data_hash = md.digest()
        ref_cfg = to_dict(reference_config(base))
        variants = {v: variant_config(exp, d, v) for v in exp.variants}
        folds = folds_for(exp, base, md)
        if exp.index:  # checked before any job runs, not after every job has
            index_covers(exp, md, [f.test for f in folds])
        # (agent, seed, training variant) -> the previous fold's (train key, folder, fold)
        warm: dict[tuple[str, int, str], tuple[str, str, Fold]] = {}
        for fold in folds:
            windows = {k: (w.start, w.stop) for k, w in
                       (("train", fold.train), ("validation", fold.validation),
                        ("test", fold.test))}
            seed0 = int(exp.seeds[0])
            out.append(JobSpec(
                str(root), exp.name, d.name, "reference", ref_cfg, fold.index, windows,
                asdict(ref_agent), seed0, exp.risk_free, data_hash,
                job_identity(ref_cfg, data_hash, ref_agent, windows, seed0, exp.risk_free, {}),
                True))
            train_v = exp.train_variant or next(iter(exp.variants))
            trained: dict[tuple[str, int, str], tuple[str, str, Fold]] = {}
            for v, vcfg in variants.items():
                for agent in exp.agents:
                    cfg = to_dict(_agent_config(vcfg, agent))
                    train_cfg = None
                    if agent.train is not None:
                        train_cfg = cfg if exp.train_per_variant else to_dict(
                            _agent_config(variants[train_v], agent))
                    det = is_deterministic(agent)
                    for seed in exp.seeds[:1] if det else exp.seeds:
                        files_digest = digests[agent.name]
                        chain = (agent.name, int(seed), v if exp.train_per_variant else train_v)
                        warm_started = agent.train is not None and agent.train.warm_start
                        prev = warm.get(chain) if warm_started else None
                        if prev is not None:
                            warm_causal(agent.name, prev[2], fold, embargo_for(base))
                            files_digest = files_digest | {"warm_start_from": prev[0]}
                        ident = job_identity(cfg, data_hash, agent, windows, int(seed),
                                             exp.risk_free, files_digest, train_cfg)
                        key = "" if train_cfg is None else job_identity(
                            train_cfg, data_hash, agent, windows, int(seed), 0.0,
                            files_digest)
                        spec = JobSpec(str(root), exp.name, d.name, v, cfg, fold.index,
                                       windows, asdict(agent), int(seed), exp.risk_free,
                                       data_hash, ident, det, files[agent.name],
                                       train_config=train_cfg, train_key=key,
                                       warm_from=prev[0] if prev else "",
                                       warm_folder=prev[1] if prev else "",
                                       diagnostic=tuple(agent.diagnostic)
                                       if v == next(iter(exp.variants)) else ())
                        out.append(spec)
                        if warm_started and (v == train_v or exp.train_per_variant):
                            trained[chain] = (key, str(spec.folder), fold)
            warm.update(trained)
    return out
