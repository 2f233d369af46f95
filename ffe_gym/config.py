"""Typed configuration: dataclasses hold the defaults, YAML overrides them.

``configs/default.yaml`` mirrors :class:`Config` exactly (a test keeps them equal). Every key is
checked on load: an unknown key, a value of the wrong type or one out of range raises
:class:`ConfigError` naming the key path (``risk.stop_loss``) and what is allowed.

A limit set to ``null`` in YAML (``None`` here) is off.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


def _bounded(default: Any, *, ge: float | None = None, gt: float | None = None,
             le: float | None = None, lt: float | None = None, doc: str = "") -> Any:
    meta = {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "lt": lt}.items() if v is not None}
    meta["doc"] = doc
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class SyntheticConfig:
    """The seeded synthetic market used when ``data.source`` is ``synthetic``."""

    preset: Literal["crypto", "fx", "mixed", "trend", "alternating", "lead", "noise"] = "crypto"
    n_assets: int = _bounded(5, ge=1)
    n_bars: int = _bounded(8760, ge=10)
    seed: int = _bounded(0, ge=0)


@dataclass
class DataConfig:
    """Where the market comes from and how calendars are aligned."""

    source: str = "synthetic"  # "synthetic", "arch" (packaged real data), a file or a directory
    symbols: list[str] | None = None  # None: every symbol found
    calendar: Literal["intersection", "union"] = "intersection"
    max_fill_bars: int = _bounded(120, ge=0, doc="longest run of carried-forward bars allowed")
    min_bars: int = _bounded(100, ge=2)
    start: str | None = None
    end: str | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class PortfolioConfig:
    """The seed system's ``portfolio:`` keys, plus the starting capital."""

    initial_balance: float = _bounded(10_000.0, gt=0)
    max_positions: int | None = _bounded(5, ge=1)
    correlation_threshold: float | None = _bounded(0.7, ge=0, lt=1, doc="null: no adjustment")
    correlation_window: int = _bounded(30, ge=2)
    # absolute: |rho| with any held asset cuts an opening (the seed's rule); hedge_aware:
    # side_i x side_j x rho, so only an opening that adds to a correlated bet is cut
    correlation_mode: Literal["absolute", "hedge_aware"] = "absolute"
    max_portfolio_risk: float | None = _bounded(0.02, gt=0,
                                                doc="95% VaR / equity, risk.var_horizon_bars")
    max_drawdown: float | None = _bounded(0.05, gt=0, lt=1)
    position_sizing: Literal[
        "correlation_adjusted", "fixed_fraction", "inverse_volatility", "volatility_target"
    ] = "correlation_adjusted"
    rebalancing_frequency: int | str = 1  # k bars, or a pandas offset such as "1D"


@dataclass
class SizingConfig:
    """How large an opening is: ``notional = equity * base * factors``."""

    base: Literal["risk", "notional"] = "risk"  # risk: risk_per_trade / stop_loss
    risk_per_trade: float = _bounded(0.01, gt=0, le=10)
    min_confidence_factor: float = _bounded(0.5, ge=0, le=1)
    volatility_window: int = _bounded(30, ge=2)
    target_volatility: float = _bounded(0.10, gt=0, doc="annualised, volatility_target sizer")


@dataclass
class RiskConfig:
    """Per-asset exits, exposure caps, VaR limit and the portfolio stop.

    ``stop_mode: fraction`` puts the stop at ``entry * (1 - stop_loss)`` (longs); ``volatility``
    at ``entry * (1 - stop_loss * sigma * sqrt(h))``, with sigma the asset's per-bar return
    volatility over ``sizing.volatility_window`` bars up to the decision and h the median bars
    per decision, fixed at entry (take_profit likewise), so one config means the same on daily
    and hourly bars. After a stop-loss or take-profit exit the asset cannot be opened again for
    ``reentry_bars`` bars (``null``: the longest decision interval, so the decision right after
    the exit cannot undo it).

    Margin (Reg-T-like). Without ``allow_borrowing`` collateral is cash: longs are paid in full,
    short-sale proceeds stay as collateral (they never pay for longs), and after every opening
    ``cash >= short value * (1 + initial_margin)``; at every close
    ``cash >= short value * (1 + maintenance_margin)``, else a margin call. With
    ``allow_borrowing`` cash may go negative (interest ``execution.margin_rate``) and the rules
    are on equity: ``equity >= initial_margin * gross`` after an opening,
    ``equity >= maintenance_margin * gross`` at every close. A margin call reduces every
    position of an open market by one fraction, the smallest that restores the maintenance
    rule at that close (fees and slippage included); a second call before the next decision
    closes them in full.
    """

    stop_loss: float | None = _bounded(0.02, gt=0, doc="fraction of entry, or k (volatility)")
    take_profit: float | None = _bounded(0.05, gt=0, doc="fraction of entry, or k (volatility)")
    stop_mode: Literal["fraction", "volatility"] = "fraction"
    reentry_bars: int | None = _bounded(
        None, ge=0, doc="bars an asset stays blocked after its stop or target; null: one decision")
    intrabar_stops: bool = True
    allow_short: bool = True
    max_short_exposure: float | None = _bounded(2.0, ge=0, doc="x equity")
    max_gross_exposure: float | None = _bounded(3.0, gt=0, doc="x equity")
    var_method: Literal["parametric", "historical"] = "parametric"
    var_window: int = _bounded(250, ge=2)
    var_confidence: float = _bounded(0.95, gt=0.5, lt=1)
    var_horizon_bars: int | None = _bounded(
        1, ge=1, doc="bars the VaR limit looks ahead; null: one decision interval")
    drawdown_reference: Literal["peak", "initial"] = "peak"
    on_portfolio_stop: Literal["terminate", "flat"] = "terminate"
    cooldown_bars: int = _bounded(24, ge=0)
    ruin_floor: float = _bounded(0.01, ge=0, lt=1, doc="share of initial balance (min 1e-9)")
    initial_margin: float = _bounded(0.5, ge=0, le=10, doc="Reg-T 50%: see the class doc")
    maintenance_margin: float = _bounded(0.3, ge=0, le=10, doc="checked at every close")
    allow_borrowing: bool = False

    def __post_init__(self) -> None:
        if self.maintenance_margin > self.initial_margin:
            raise ConfigError(f"risk.maintenance_margin: {self.maintenance_margin} is above "
                              f"risk.initial_margin {self.initial_margin}; an opening would "
                              "be called at its own close")


@dataclass
class AssetCosts:
    """Per-asset cost overrides; ``None`` keeps the global value."""

    fee_rate: float | None = _bounded(None, ge=0, lt=1)
    fixed_fee: float | None = _bounded(None, ge=0)
    slippage: float | None = _bounded(None, ge=0, lt=1)
    borrow_rate: float | None = _bounded(None, ge=0)


@dataclass
class ExecutionConfig:
    """Fill price and costs. Slippage is adverse and a fraction of price."""

    price: Literal["close", "next_open"] = "next_open"
    fee_rate: float = _bounded(0.001, ge=0, lt=1)
    fixed_fee: float = _bounded(0.0, ge=0)
    slippage: float = _bounded(0.0001, ge=0, lt=1)
    volatility_slippage: float = _bounded(0.0, ge=0, doc="extra slippage per unit of volatility")
    borrow_rate: float = _bounded(0.0, ge=0, doc="per year, charged per bar on short notional")
    margin_rate: float = _bounded(0.0, ge=0, doc="per year, per bar on negative cash (borrowing)")
    overrides: dict[str, AssetCosts] = field(default_factory=dict)


FEATURES = ("log_return", "range", "volatility", "rsi", "macd", "volume_z")


def _is_callable_name(name: str) -> bool:
    """``"package.module:function"``: a user feature (loaded and checked when the env is built)."""
    module, sep, attr = name.partition(":")
    return bool(sep) and all(part.isidentifier() for part in module.split(".")) \
        and attr.isidentifier()


@dataclass
class FeatureConfig:
    """Causal per-asset features, computed once per dataset (see ffe_gym.features)."""

    names: list[str] = field(default_factory=lambda: list(FEATURES))
    volatility_window: int = _bounded(24, ge=2)
    rsi_window: int = _bounded(14, ge=2)
    macd_fast: int = _bounded(12, ge=1)
    macd_slow: int = _bounded(26, ge=2)
    macd_signal: int = _bounded(9, ge=1)
    volume_window: int = _bounded(24, ge=2)
    clip: float = _bounded(10.0, gt=0, doc="features and other observations are clipped to +-clip")

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in FEATURES and not _is_callable_name(n)]
        if unknown:
            raise ConfigError(f"env.features.names: unknown feature {unknown[0]!r} "
                              f"(allowed: {', '.join(FEATURES)}, or 'module:callable')")
        if len(set(self.names)) != len(self.names):
            dup = next(n for n in self.names if self.names.count(n) > 1)
            raise ConfigError(f"env.features.names: {dup!r} is listed twice")
        if not self.names:
            raise ConfigError("env.features.names: at least one feature is needed")
        if self.macd_fast >= self.macd_slow:
            raise ConfigError("env.features.macd_fast: must be below macd_slow")


@dataclass
class RewardConfig:
    """Reward = kind - drawdown_penalty * drawdown - turnover_penalty * traded / equity."""

    kind: str = "log_return"  # log_return, differential_sharpe, or "module:callable"
    drawdown_penalty: float = _bounded(0.0, ge=0)
    turnover_penalty: float = _bounded(0.0, ge=0)
    dsr_eta: float = _bounded(0.01, gt=0, lt=1, doc="adaptation rate of the differential Sharpe")


@dataclass
class EnvConfig:
    """How the environment presents the engine to a policy."""

    action_scheme: Literal["signals", "discrete", "single", "weights"] = "signals"
    dead_band: float = _bounded(0.1, ge=0, lt=1, doc="signals: |a| below it is HOLD")
    confidence_levels: int = _bounded(1, ge=1, doc="discrete: levels per side")
    observation: Literal["dict", "flat"] = "dict"
    window: int = _bounded(24, ge=1, doc="bars of features in an observation")
    episode_bars: int | None = _bounded(1000, ge=1, doc="random-start episode length; null: all")
    features: FeatureConfig = field(default_factory=FeatureConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)


@dataclass
class TrainConfig:
    """How agents are trained: threads, data splits, evaluation and checkpoints."""

    torch_threads: int = _bounded(1, ge=1, doc="torch.set_num_threads; 1 is fastest for small nets")
    env_threads: int | Literal["auto"] = _bounded(
        1, ge=1, doc="numba threads of the training env's books; auto: measured per step")
    device: str = "cpu"
    train_fraction: float = _bounded(0.7, gt=0, lt=1)
    validation_fraction: float = _bounded(0.15, gt=0, lt=1)
    embargo_bars: int | None = _bounded(None, ge=0, doc="null: the longest lookback")
    eval_freq: int = _bounded(10_000, ge=1, doc="environment steps between validations")
    eval_episodes: int = _bounded(1, ge=1)
    checkpoint_freq: int = _bounded(50_000, ge=1, doc="environment steps between checkpoints")
    evaluate_model: Literal["best", "final"] = "best"  # best on validation, or the last model

    def __post_init__(self) -> None:
        if self.train_fraction + self.validation_fraction >= 1.0:
            raise ConfigError("train.validation_fraction: train_fraction + validation_fraction "
                              "must leave a test window (< 1)")


@dataclass
class Config:
    """The whole configuration of one environment / backtest."""

    data: DataConfig = field(default_factory=DataConfig)
    portfolio: PortfolioConfig = field(default_factory=PortfolioConfig)
    sizing: SizingConfig = field(default_factory=SizingConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.risk.stop_mode == "fraction" and (self.risk.stop_loss or 0.0) >= 1.0:
            raise ConfigError(f"risk.stop_loss: {self.risk.stop_loss!r} is a fraction of the entry "
                              "price with stop_mode 'fraction' and must be < 1")
        if self.sizing.base == "risk" and self.risk.stop_loss is None:
            raise ConfigError(
                "sizing.base: 'risk' sizes on risk_per_trade / stop_loss, so risk.stop_loss "
                "must be set; use sizing.base: notional to trade without a stop"
            )
        freq = self.portfolio.rebalancing_frequency
        if isinstance(freq, int) and freq < 1:
            raise ConfigError(f"portfolio.rebalancing_frequency: must be >= 1 bar, got {freq}")
        if isinstance(freq, str):
            import pandas as pd

            try:
                pd.tseries.frequencies.to_offset(freq)
            except ValueError as exc:
                raise ConfigError(
                    f"portfolio.rebalancing_frequency: {freq!r} is not a pandas offset ({exc})"
                ) from None


# --------------------------------------------------------------------------------------------
# dict <-> dataclass with checks


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: must not be null (allowed: {_type_name(tp)})")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{path}: {value!r} is not {_type_name(tp)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{path}: {value!r} is not one of {_type_name(tp)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        kt, vt = typing.get_args(tp)
        return {_convert(k, kt, path): _convert(v, vt, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):  # .inf / .nan in YAML: a limit is off with null
            raise ConfigError(f"{path}: {value!r} is not a finite number (null turns a limit "
                              "off)")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported type {tp!r}")  # pragma: no cover - programming error


def _check_bounds(value: Any, meta: Mapping[str, Any], path: str) -> None:
    if value is None or isinstance(value, (str, bool)):
        return
    checks = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
              "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}
    for key, (ok, _) in checks.items():
        if key in meta and not ok(value, meta[key]):
            allowed = ", ".join(f"{checks[k][1]} {meta[k]}" for k in checks if k in meta)
            raise ConfigError(f"{path}: {value!r} is out of range (allowed: {allowed})")


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys, types and ranges."""
    where = path or "<root>"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ConfigError(f"{key}: unknown key (allowed here: {', '.join(fields)})")
    kwargs = {}
    for name, value in data.items():
        key = f"{path}.{name}" if path else name
        converted = _convert(value, hints[name], key)
        _check_bounds(converted, fields[name].metadata, key)
        kwargs[name] = converted
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # pragma: no cover - defensive: name the section
        raise ConfigError(f"{where}: {exc}") from exc


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON ready) of a config dataclass."""
    return dataclasses.asdict(cfg)


def merge(base: Mapping[str, Any], override: Mapping[str, Any],
          path: str = "") -> dict[str, Any]:
    """Recursive merge of two plain mappings; ``override`` wins.

    :raises ConfigError: where ``override`` holds a section (a mapping) and ``base`` holds
        something else there (``risk: 5``): that is a broken section, not one to replace.
    """
    out = dict(base)
    for k, v in override.items():
        key = f"{path}.{k}" if path else str(k)
        here = out.get(k)
        if isinstance(v, Mapping) and isinstance(here, Mapping):
            out[k] = merge(here, v, key)
        elif isinstance(v, Mapping) and here is not None and k in out:
            raise ConfigError(f"{key}: expected a mapping (a section), got "
                              f"{type(here).__name__} {here!r}")
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """The parsed content of a YAML file; an unreadable file or bad YAML raises
    :class:`ConfigError` naming the file.

    :param what: what the file is, for the message ("experiment", "LLM config", ...).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def load_yaml_as(cls: type, path: str | Path, what: str = "config") -> Any:
    """A dataclass ``cls`` from a YAML file; errors name the file (and key path)."""
    data = read_yaml(path, what)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_config(path: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply ``overrides``.

    :param path: a YAML file with any subset of the keys of :class:`Config`.
    :param overrides: a nested mapping applied on top (e.g. from command-line flags).
    :raises ConfigError: naming the file and key path of the first bad value.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        loaded = read_yaml(path)
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = dict(loaded or {})
    try:
        if overrides:
            data = merge(data, overrides)
        return from_dict(Config, data)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from None
        raise


def coerce_config(config: Config | Mapping[str, Any] | str | Path | None) -> Config:
    """Accept a :class:`Config`, a nested mapping, a YAML path, or None (defaults)."""
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    if isinstance(config, (str, Path)):
        return load_config(config)
    if isinstance(config, Mapping):
        return from_dict(Config, config)
    raise ConfigError(
        f"config: expected a Config, mapping or YAML path, got {type(config).__name__}")
