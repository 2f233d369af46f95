"""The audit: placebo, permutation and causality checks on any policy."""

from __future__ import annotations

from typing import Any

import numpy as np

from ffe_agents.baselines import Cash, Momentum
from ffe_gym.data import synthetic_market
from ffe_gym.evaluation.audit import audit

MD = synthetic_market(4, 1500, seed=11)
CFG = {"risk": {"on_portfolio_stop": "flat"}}
WINDOWS = [(300 + 200 * k, 460 + 200 * k) for k in range(5)]


class Peeking(Momentum):
    """Momentum that also reads the next bar's close: the causality check's positive control."""

    name = "peeking"

    def bind_market(self, view: Any) -> None:
        self._view = view

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        future = self._view.hindsight_close()  # from the current bar to the episode's end
        if len(future) > 1:
            return np.sign(future[1] - future[0]).astype(np.float32)
        return super().act(observation, info)


def test_a_constant_policy_is_flagged_as_ignoring_its_input():
    r = audit(Cash, CFG, MD, WINDOWS)
    assert r.placebo_changed == 0.0 and r.decisions > 500
    assert any(f.startswith("ignores its input") for f in r.flags)
    assert r.causal


def test_momentum_uses_its_input_and_is_causal_and_order_free():
    r = audit(Momentum, CFG, MD, WINDOWS)
    assert r.placebo_changed > 0.3, r.lines()
    assert not any(f.startswith("ignores") for f in r.flags)
    assert r.permutation_changed == 0.0 and r.permutation_difference < 1e-9
    assert r.causal, r.causality_detail


def test_a_policy_that_reads_the_future_fails_the_causality_check():
    r = audit(Peeking, CFG, MD, WINDOWS[:1])
    assert not r.causal and "changed when only prices after bar" in r.causality_detail
    assert any(f.startswith("reads the future") for f in r.flags)


def test_the_grid_runs_the_diagnostic_and_flags_what_the_audit_flags(tmp_path):
    """In a comparison, `diagnostic: [placebo, permutation]` runs both beside the real run in
    the first variant's jobs only: cash is flagged as ignoring its input, momentum is not and
    reads no column by position, a policy that trades by column position is flagged."""
    import yaml

    from ffe_gym.evaluation import experiment as ex
    from ffe_gym.evaluation import grid, runner
    from ffe_gym.evaluation.report import diagnostic_lines

    both = ["placebo", "permutation"]
    spec = {
        "name": "diag",
        "config": {"risk": {"on_portfolio_stop": "flat", "var_window": 20},
                   "env": {"window": 8}},
        "datasets": [{"name": "syn", "data": {"source": "synthetic",
                                              "synthetic": {"n_assets": 3, "n_bars": 1500,
                                                            "seed": 1}}}],
        "folds": {"n_folds": 4, "train": 300, "validation": 100, "test": 150},
        "seeds": [0],
        "variants": {"base": {}, "no_var": {"portfolio": {"max_portfolio_risk": None}}},
        "agents": [{"name": "cash", "policy": "cash", "diagnostic": both},
                   {"name": "momentum", "policy": "momentum", "diagnostic": both},
                   {"name": "first-column", "policy": "faulty:FirstColumn",
                    "diagnostic": both}],
    }
    path = tmp_path / "diag.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    exp = ex.load_experiment(path)
    specs = ex.jobs(exp, tmp_path / "runs")
    assert {s.variant for s in specs if s.diagnostic} == {"base"}
    rows = runner.run_jobs(specs, "serial", progress=False)
    assert all(r.get("reuse") != "failed" for r in rows), [r.get("error") for r in rows]
    done = [r for r in rows if r["role"] == "agent" and r["variant"] == "base"]
    assert all(r["diagnostic"]["decisions"] == r["steps"] for r in done)
    assert all(r["diagnostic"] is None for r in rows if r["variant"] == "no_var")
    agg = grid.aggregate(grid.results_frame(rows, exp), exp, reps=200)
    by = {(r["agent"], r["variant"]): r for r in agg["table"]}
    cash, mom, col = by[("cash", "base")], by[("momentum", "base")], by[("first-column", "base")]
    assert cash["diagnostic"]["placebo"]["changed"] == 0.0
    assert any(f.startswith("IGNORES ITS INPUT") for f in cash["flags"])
    assert mom["diagnostic"]["placebo"]["changed"] > 0.3
    assert not any(f.startswith("IGNORES") for f in mom["flags"])
    assert mom["diagnostic"]["permuted"]["changed"] == 0.0
    assert not any(f.startswith("DEPENDS ON THE ORDER") for f in mom["flags"])
    assert any(f.startswith("DEPENDS ON THE ORDER") for f in col["flags"])
    assert by[("momentum", "no_var")]["diagnostic"] is None
    lines = diagnostic_lines(agg)
    assert len(lines) == 3 and all("4 windows" in line for line in lines)
