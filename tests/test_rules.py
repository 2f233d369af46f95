"""Every rule of the engine is declared once, completely (ffe_gym.portfolio.rules)."""

from __future__ import annotations

import dataclasses
import inspect
import re

from ffe_gym.config import Config, from_dict, merge, to_dict
from ffe_gym.evaluation import experiment as ex
from ffe_gym.portfolio import kernel
from ffe_gym.portfolio import layout as L
from ffe_gym.portfolio.rules import RULES, by_refusal, rules_off


def _codes() -> dict[str, int]:
    return {k: v for k, v in vars(L).items() if k.startswith("R_") and k != "R_NONE"}


def test_every_refusal_code_has_exactly_one_rule_named_as_the_engine_names_it():
    refusing = [r for r in RULES if r.refusal is not None]
    assert sorted(r.refusal for r in refusing) == sorted(_codes().values())
    for r in refusing:
        assert L.REFUSAL_NAMES[r.refusal] == r.name, r
        assert r.monotone is not None, f"{r.name}: a refusing rule says whether it is monotone"
    for r in RULES:
        if r.refusal is None:
            assert r.monotone is None and r.off is not None, r  # a non-refusing rule is a limit


def test_every_key_is_a_config_key_and_every_limit_has_one():
    cfg = Config()
    for r in RULES:
        for key in r.keys:
            section, _, name = key.partition(".")
            fields = {f.name for f in dataclasses.fields(getattr(cfg, section))}
            assert name in fields, f"{r.name}: {key} is not a config key"
        if r.off is not None:
            assert r.keys, f"{r.name}: a rule the reference turns off is set by some key"
            for section, values in r.off.items():
                assert {f"{section}.{k}" for k in values} <= set(r.keys), r.name


def test_the_reference_turns_every_limit_off_and_keeps_the_mechanics():
    cfg = from_dict(Config, merge(to_dict(Config()), {
        "portfolio": {"max_positions": 3, "max_portfolio_risk": 0.01, "max_drawdown": 0.1,
                      "correlation_threshold": 0.5},
        "risk": {"reentry_bars": 5, "max_short_exposure": 1.0, "max_gross_exposure": 1.5,
                 "allow_short": False, "initial_margin": 0.7, "maintenance_margin": 0.4}}))
    ref = to_dict(ex.reference_config(cfg))
    for r in RULES:
        for section, values in (r.off or {}).items():
            for key, value in values.items():
                assert ref[section][key] == value, f"{r.name}: {section}.{key} left on"
    for r in RULES:
        if r.off is None:  # kept as the experiment has it
            for key in r.keys:
                section, _, name = key.partition(".")
                assert ref[section][name] == to_dict(cfg)[section][name], key
    assert ex.RULES_OFF == rules_off()
    from_dict(Config, merge(to_dict(Config()), rules_off()))  # valid on its own


def test_only_monotone_rules_refuse_before_an_opening_is_sized():
    """``kernel._early_refusal`` refuses at half the unadjusted size, so for every size: valid
    only for rules where a smaller opening passes whenever a larger one does."""
    source = inspect.getsource(kernel._early_refusal.py_func)
    used = {getattr(L, name) for name in re.findall(r"L\.(R_[A-Z_]+)", source)}
    assert used, "the early refusal refuses by code"
    rules = by_refusal()
    for code in used:
        assert rules[code].monotone, f"{rules[code].name} refuses early but is not monotone"


def test_every_refusal_is_specified_and_implemented():
    # a new refusing rule is written in the plain-Python specification and in the kernel,
    # where the differential test (tests/test_specification.py) compares them
    from ffe_gym.portfolio import specification

    spec = inspect.getsource(specification)
    code = inspect.getsource(kernel)
    for name in _codes():
        assert re.search(rf"\bL\.{name}\b", spec), f"{name}: not in the specification"
        assert re.search(rf"\bL\.{name}\b", code), f"{name}: not in the kernel"
