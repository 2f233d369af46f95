"""Rendering, kept apart from the dynamics. Matplotlib is imported here only, drawing on an Agg
canvas of its own (the global backend is left alone)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ffe_gym.env.portfolio_env import PortfolioEnv


def ansi(env: PortfolioEnv) -> str:
    """A text summary of the book at its current bar."""
    pf = env.portfolio
    md = env.market
    bar = int(pf.bar[0])
    w = pf.weights()[0]
    lines = [
        f"{md.index[bar]:%Y-%m-%d %H:%M} bar {bar}  equity {pf.equity[0]:,.2f}  "
        f"cash {pf.cash[0]:,.2f}  drawdown {pf.drawdown()[0]:.2%}  status {env.status()}"
        + ("  [SYNTHETIC]" if md.is_synthetic else ""),
    ]
    for j, sym in enumerate(md.symbols):
        if pf.units[0, j] != 0:
            lines.append(f"  {sym:<12} weight {w[j]:+.3f}  units {pf.units[0, j]:+.6g}")
    return "\n".join(lines) + "\n"


def rgb_array(env: PortfolioEnv, width: int = 640, height: int = 480) -> np.ndarray:
    """Equity, drawdown and weights of the episode so far, as an (H, W, 3) uint8 image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h = env._history or {"bars": [], "equity": [], "weights_bars": [], "weights": []}
    md = env.market
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax_eq, ax_dd, ax_w = fig.subplots(3, 1, sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1, 1.5]})
    if h["bars"]:
        times = md.index[h["bars"]]
        eq = np.asarray(h["equity"])
        ax_eq.plot(times, eq, lw=1.0)
        ax_dd.fill_between(times, eq / np.maximum.accumulate(eq) - 1.0, 0.0, color="tab:red",
                           alpha=0.5)
        weights = np.asarray(h["weights"])
        wt = md.index[h["weights_bars"]]
        for j, sym in enumerate(md.symbols):
            ax_w.step(wt, weights[:, j], where="post", lw=0.8, label=sym)
        if md.n_assets <= 10:
            ax_w.legend(fontsize=6, ncol=min(md.n_assets, 5), loc="upper left")
    ax_eq.set_ylabel("equity")
    ax_dd.set_ylabel("drawdown")
    ax_w.set_ylabel("weight")
    title = "ffe-gym portfolio" + (" [SYNTHETIC DATA]" if md.is_synthetic else "")
    ax_eq.set_title(title, fontsize=9)
    fig.tight_layout()
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    return image
