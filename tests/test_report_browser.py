"""The HTML report in a real headless browser (Debian's chromium; skipped when it is absent):
every image loads and nothing overflows the page width."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import CHROMIUM, browser_probe

from ffe_gym.evaluation import experiment as ex
from ffe_gym.evaluation import grid, report, runner

PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const page = document.documentElement;
  const wide = [...document.querySelectorAll('body > *')]
      .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
      .map(e => e.tagName + '.' + e.className);
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({images: imgs.length, broken: broken, wide: wide,
                                    scrollWidth: page.scrollWidth, width: window.innerWidth});
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_images_load_and_nothing_overflows(tmp_path):
    exp_yaml = {
        "name": "browser", "config": {"risk": {"on_portfolio_stop": "flat", "var_window": 20},
                                      "env": {"window": 8}},
        "datasets": [{"name": "syn", "data": {"source": "synthetic", "synthetic": {
            "n_assets": 4, "n_bars": 900, "seed": 3}}}],
        "folds": {"n_folds": 2, "train": 300, "validation": 50, "test": 100},
        "seeds": [0, 1],
        "variants": {"rules": {}, "no_var": {"portfolio": {"max_portfolio_risk": None}}},
        "agents": [{"name": "momentum", "policy": "momentum"},
                   {"name": "random-signals-with-a-long-name", "policy": "random"},
                   {"name": "equal-weight", "policy": "equal-weight"}]}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp_yaml, sort_keys=False))
    exp = ex.load_experiment(tmp_path / "e.yaml")
    rows = runner.run_jobs(ex.jobs(exp, tmp_path / "runs"), "serial", progress=False)
    df = grid.results_frame(rows, exp)
    agg = grid.aggregate(df, exp, reps=100)
    page = report.html_report(tmp_path / "report.html", title="browser", df=df, rows=rows,
                              agg=agg, config={"experiment": ex.to_dict(exp)},
                              synthetic=True)
    found = _probe(page.read_text(), tmp_path / "probe.html")
    assert found["images"] == 6 and found["broken"] == []  # 3 summary plots, 2 windows, P&L
    assert found["wide"] == [] and found["scrollWidth"] <= found["width"], found

    # the probe does see an overflow and a broken image when there is one
    bad = page.read_text().replace(
        "<h1>", "<table style='width:3000px'><tr><td>x</td></tr></table>"
                "<img src='data:image/png;base64,AAAA' alt='broken'><h1>", 1)
    seen = _probe(bad, tmp_path / "bad.html")
    assert seen["wide"] and seen["broken"] == ["broken"]


def _probe(html: str, path: Path) -> dict:
    return browser_probe(html, path, body=PROBE, budget_ms=10000)
