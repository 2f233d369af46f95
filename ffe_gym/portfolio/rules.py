"""The engine's rules, each declared once: its config keys, how it refuses, how it is turned off.

A rule is a limit or a mechanism of the decision step (:mod:`ffe_gym.portfolio.kernel`) that a
config sets. Each :class:`Rule` declares, beside its name:

* ``keys``: the config keys (``section.key``) that set it;
* ``refusal``: the refusal code (``layout.R_*``) it counts when it refuses an opening, or None
  for a rule that never refuses (an exit, a sizing factor);
* ``off``: the config values that turn it off. The comparison's rule-free reference
  (``experiment.reference_config``) applies every rule's ``off`` (:func:`rules_off`), so a rule
  declared here cannot stay on in it. None for a mechanism of the market or the account that
  the reference keeps (cash, margin, what can be traded or shorted);
* ``monotone``: for a refusing rule, whether every smaller opening of the same asset and side
  passes once a larger one does. Only a monotone rule may refuse an opening before it is sized
  (``kernel._early_refusal``: refused at half its unadjusted size, refused at every size).

``tests/test_rules.py`` fails when a refusal code has no rule, a key is not a config key, an
``off`` value is refused by the config or left on by the reference, or the early refusal uses a
rule not declared monotone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ffe_gym.portfolio import layout as L


@dataclass(frozen=True)
class Rule:
    """One rule of the decision step (see the module docstring)."""

    name: str  # a refusing rule: the name its refusals are counted under (layout)
    keys: tuple[str, ...]
    refusal: int | None
    off: dict[str, dict[str, Any]] | None
    monotone: bool | None  # None: the rule never refuses


RULES: tuple[Rule, ...] = (
    # limits a config turns on and the rule-free reference turns off
    Rule("max_positions", ("portfolio.max_positions",), L.R_MAX_POSITIONS,
         {"portfolio": {"max_positions": None}}, True),  # does not depend on the size
    Rule("correlation_sizing", ("portfolio.correlation_threshold",
                                "portfolio.correlation_window", "portfolio.correlation_mode"),
         None, {"portfolio": {"correlation_threshold": None}}, None),
    Rule("var", ("portfolio.max_portfolio_risk", "risk.var_method", "risk.var_window",
                 "risk.var_confidence", "risk.var_horizon_bars"), L.R_VAR,
         {"portfolio": {"max_portfolio_risk": None}}, False),  # a larger hedge can lower VaR
    # the portfolio drawdown stop, and the cooldown after it that refuses openings
    Rule("cooldown", ("portfolio.max_drawdown", "risk.drawdown_reference",
                           "risk.on_portfolio_stop", "risk.cooldown_bars"), L.R_COOLDOWN,
         {"portfolio": {"max_drawdown": None}}, True),  # the cooldown blocks every size
    Rule("risk_sizing", ("sizing.base", "sizing.risk_per_trade"), None,
         {"sizing": {"base": "notional"}}, None),
    Rule("stop_loss", ("risk.stop_loss", "risk.stop_mode", "risk.intrabar_stops"), None,
         {"risk": {"stop_loss": None}}, None),
    Rule("take_profit", ("risk.take_profit", "risk.stop_mode", "risk.intrabar_stops"), None,
         {"risk": {"take_profit": None}}, None),
    Rule("reentry", ("risk.reentry_bars",), L.R_REENTRY, {"risk": {"reentry_bars": 0}}, True),
    Rule("short_cap", ("risk.max_short_exposure",), L.R_SHORT_CAP,
         {"risk": {"max_short_exposure": None}}, True),
    Rule("gross_cap", ("risk.max_gross_exposure",), L.R_GROSS_CAP,
         {"risk": {"max_gross_exposure": None}}, True),
    # mechanics of the market and the account: the reference keeps them
    Rule("cash", ("portfolio.initial_balance",), L.R_CASH, None, True),
    Rule("margin", ("risk.initial_margin", "risk.maintenance_margin", "risk.allow_borrowing"),
         L.R_MARGIN, None, True),
    Rule("cash_at_fill", ("execution.price",), L.R_CASH_AT_FILL, None, True),
    Rule("not_tradable", (), L.R_NOT_TRADABLE, None, True),  # a closed market: every size
    Rule("no_shorting", ("risk.allow_short",), L.R_NO_SHORTING, None, True),
    Rule("zero_size", (), L.R_ZERO_SIZE, None, False),  # refuses the smallest sizes
)


def rules_off() -> dict[str, dict[str, Any]]:
    """Every rule's ``off`` merged: the overrides of the rule-free reference."""
    out: dict[str, dict[str, Any]] = {}
    for rule in RULES:
        for section, values in (rule.off or {}).items():
            out.setdefault(section, {}).update(values)
    return out


def by_refusal() -> dict[int, Rule]:
    """The refusing rules by their refusal code."""
    return {r.refusal: r for r in RULES if r.refusal is not None}
