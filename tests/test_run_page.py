"""``evaluate --out``: one run's files agree with the episode, and its page works in a browser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import CHROMIUM, browser_probe

from ffe_gym.commands import evaluate

N_ASSETS = 4


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """momentum on a synthetic market, with limits tight enough that rules refuse openings."""
    tmp = tmp_path_factory.mktemp("run")
    cfg = tmp / "tight.yaml"
    cfg.write_text(f"data:\n  synthetic: {{n_assets: {N_ASSETS}, n_bars: 2400, seed: 5}}\n"
                   "env: {window: 8}\n"
                   "portfolio: {max_positions: 2}\n"
                   "risk: {stop_loss: 0.01, take_profit: 0.02, reentry_bars: 3,"
                   " on_portfolio_stop: flat}\n")
    out = tmp / "momentum"
    code = evaluate.main(["--policy", "momentum", "--config", str(cfg), "--start", "300",
                          "--end", "2300", "--no-progress", "--out", str(out), "--json-tables"])
    assert code == 0
    return out


def test_the_files_agree_with_the_episode(run_folder):
    summary = json.loads((run_folder / "summary.json").read_text())
    m = summary["metrics"]
    eq = pd.read_csv(run_folder / "equity.csv")
    assert len(eq) == m["bars"] + 1 > 1000  # the starting value, then every bar
    assert eq["equity"].iloc[-1] == pytest.approx(m["final_equity"], rel=1e-12)
    assert (eq["drawdown"] <= 0).all()
    assert eq["drawdown"].min() == pytest.approx(m["max_drawdown"], rel=1e-9)
    trades = pd.read_csv(run_folder / "trades.csv")
    assert len(trades) == m["fills"] and (trades["reason"] != "signal").any()  # stops fired
    refusals = pd.read_csv(run_folder / "refusals.csv")
    assert refusals["reason"].value_counts().to_dict() == {  # scaled orders: counted only
        k: v for k, v in summary["refusals"].items() if v and k != "scaled"}
    assert summary["refusals"]["scaled"] > 0
    assert "max_positions" in set(refusals["reason"])
    w = pd.read_csv(run_folder / "weights.csv")
    assert len(w) == summary["steps"] + 1
    np.testing.assert_allclose(w["cash"], 1.0 - w.drop(columns=["time", "cash"]).sum(axis=1))
    sheet = pd.read_csv(run_folder / "tearsheet.csv").set_index("metric")
    assert list(sheet.columns) == ["momentum", "reference: buy-and-hold"]
    assert sheet.loc["total_return", "momentum"] == pytest.approx(m["total_return"])
    # the reference: equal weights bought once, held, every rule off, on the same bars
    assert eq["reference_equity"].notna().all()
    ref_return = eq["reference_equity"].iloc[-1] / eq["reference_equity"].iloc[0] - 1
    assert sheet.loc["total_return", "reference: buy-and-hold"] == pytest.approx(ref_return)
    monthly = pd.read_csv(run_folder / "monthly.csv")
    assert np.prod(1 + monthly["return"]) - 1 == pytest.approx(m["total_return"], rel=1e-9)
    tables = json.loads((run_folder / "run.json").read_text())
    assert set(tables) == {"equity", "weights", "trades", "refusals", "attribution",
                           "tearsheet", "monthly"}
    assert len(tables["trades"]) == len(trades)


def test_the_reference_covers_the_bars_of_an_episode_that_ended_early(tmp_path):
    cfg = tmp_path / "stop.yaml"
    cfg.write_text("data:\n  synthetic: {n_assets: 4, n_bars: 2400, seed: 5}\nenv: {window: 8}\n"
                   "risk: {stop_loss: 0.01, take_profit: 0.02, on_portfolio_stop: terminate}\n"
                   "portfolio: {max_drawdown: 0.03}\n")
    out = tmp_path / "run"
    assert evaluate.main(["--policy", "momentum", "--config", str(cfg), "--start", "300",
                          "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "portfolio_stop"
    eq = pd.read_csv(out / "equity.csv")
    sheet = pd.read_csv(out / "tearsheet.csv").set_index("metric")
    ref = sheet["reference: buy-and-hold"]
    assert ref["final_equity"] == pytest.approx(eq["reference_equity"].iloc[-1], rel=1e-12)


def test_no_reference_and_no_page_without_plotly(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_plotly(name, *args, **kwargs):
        if name == "plotly" or name.startswith("plotly."):
            raise ImportError("no plotly")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_plotly)
    out = tmp_path / "cash"
    assert evaluate.main(["--policy", "cash", "--end", "2022-01-20", "--no-progress",
                          "--out", str(out), "--reference", "none"]) == 0
    assert not (out / "run.html").exists() and (out / "equity.csv").exists()
    assert "reference_equity" not in pd.read_csv(out / "equity.csv").columns
    assert "pip install 'ffe-gym[eval]'" in capsys.readouterr().err


CATCH = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message)));
</script>"""
PROBE = """<script>
window.addEventListener('load', () => setTimeout(() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  const drawn = plots.filter(p => p.querySelector('svg.main-svg')).length;
  const menus = plots.map(p => ((p.layout || {}).updatemenus || []).map(
      u => u.buttons.map(b => b.label)));
  const traces = plots.map(p => (p.data || []).length);
  const wide = [...document.querySelectorAll('body > *')]
      .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.tagName);
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({plots: plots.length, drawn, menus, traces, wide,
                                    errors: window.__errors, title: document.title,
                                    text: document.body.innerText.slice(0, 2000)});
  document.body.appendChild(out);
}, 500));
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_page_draws_every_chart_in_a_browser(run_folder, tmp_path):
    page = (run_folder / "run.html").read_text()
    assert "<script src" not in page  # plotly.js inline: the page opens offline
    found = _probe(page, tmp_path / "probe.html")
    assert found["errors"] == [], found["errors"]
    assert found["plots"] == 5 and found["drawn"] == 5, found
    assert found["wide"] == []
    # the prices chart: one entry per asset in its menu, a price line and markers for each
    assert [m for m in found["menus"] if m] == [[[f"SYN_C{i + 1}" for i in range(N_ASSETS)]]]
    assert "SYNTHETIC DATA" in found["text"] and "reference: buy-and-hold" in found["text"]
    # the probe does see a script error
    broken = page.replace("</body>", "<script>undefined_function()</script></body>")
    assert _probe(broken, tmp_path / "broken.html")["errors"]


def _probe(html: str, path: Path) -> dict:
    return browser_probe(html, path, head=CATCH, body=PROBE)
