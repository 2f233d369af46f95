"""Features against their pandas formulation (rolling().std(), ewm(adjust=False)) and causality."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from helpers import market

from ffe_gym.config import FeatureConfig
from ffe_gym.data import synthetic_market
from ffe_gym.features import compute_features


def pandas_features(md, cfg: FeatureConfig) -> np.ndarray:
    """The pandas implementation the numba kernels replaced, kept as the reference."""
    close = pd.DataFrame(md.close)
    log_ret = np.log(close).diff().fillna(0.0)
    out = []
    for name in cfg.names:
        if name == "log_return":
            f = 100.0 * log_ret
        elif name == "range":
            f = 100.0 * pd.DataFrame(np.log(md.high / md.low))
        elif name == "volatility":
            f = 100.0 * log_ret.rolling(cfg.volatility_window, min_periods=2).std()
        elif name == "rsi":
            delta = close.diff().fillna(0.0)
            gain = delta.clip(lower=0.0).ewm(alpha=1.0 / cfg.rsi_window, adjust=False).mean()
            loss = (-delta).clip(lower=0.0).ewm(alpha=1.0 / cfg.rsi_window,
                                                adjust=False).mean()
            total = gain + loss
            f = (gain / total.where(total > 0)).fillna(0.5) - 0.5
        elif name == "macd":
            fast = close.ewm(span=cfg.macd_fast, adjust=False).mean()
            slow = close.ewm(span=cfg.macd_slow, adjust=False).mean()
            macd = fast - slow
            f = 100.0 * (macd - macd.ewm(span=cfg.macd_signal, adjust=False).mean()) / close
        else:
            vol = pd.DataFrame(md.volume)
            roll = vol.rolling(cfg.volume_window, min_periods=2)
            sd = roll.std()
            f = (vol - roll.mean()) / sd.where(sd > 0)
        out.append(np.nan_to_num(f.to_numpy(dtype=np.float64), nan=0.0, posinf=0.0,
                                 neginf=0.0))
    return np.clip(np.stack(out, axis=-1), -cfg.clip, cfg.clip).astype(np.float32)


@pytest.mark.parametrize("preset", ["crypto", "mixed"])
def test_kernels_equal_the_pandas_formulation(preset):
    md = synthetic_market(4, 2000, preset, seed=3)
    vol = md.volume.copy()
    vol[[5, 6, 300, 301, 302], 1] = np.nan  # missing volumes are skipped by the window
    md = replace(md, volume=vol)
    cfg = FeatureConfig()
    ours, ref = compute_features(md, cfg), pandas_features(md, cfg)
    np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=2e-6)


def test_by_hand_on_a_small_panel():
    close = [100.0, 110.0, 99.0, 99.0]
    md = market(close, volume=[10.0, 20.0, np.nan, 40.0])
    cfg = FeatureConfig(names=["log_return", "volatility", "rsi", "volume_z"],
                        volatility_window=3, rsi_window=2, volume_window=3, clip=100.0)
    f = compute_features(md, cfg)[:, 0, :]
    r = 100 * np.log([1.0, 1.1, 0.9, 1.0])
    np.testing.assert_allclose(f[:, 0], r, rtol=1e-6)
    np.testing.assert_allclose(f[2, 1], np.std(r[:3], ddof=1), rtol=1e-6)  # rows 0..2
    # Wilder RSI, alpha 1/2, moves 0, +10, -11, 0: gains 0, 5, 2.5, 1.25; losses 0, 0, 5.5,
    # 2.75; RSI / 100 - 0.5 = g / (g + l) - 0.5
    np.testing.assert_allclose(f[:, 2], [0.0, 0.5, 2.5 / 8 - 0.5, 1.25 / 4 - 0.5], atol=1e-6)
    # volume_z at row 3 over rows 1..3, the NaN skipped: (40 - 30) / std(20, 40)
    np.testing.assert_allclose(f[3, 3], 10 / np.std([20.0, 40.0], ddof=1), rtol=1e-6)
    assert f[2, 3] == 0.0  # the missing volume itself


def test_row_t_never_reads_a_later_bar():
    md = synthetic_market(3, 600, "crypto", seed=1)
    cfg = FeatureConfig()
    base = compute_features(md, cfg)
    t = 400
    close = md.close.copy()
    close[t + 1:] *= 1.5
    changed = replace(md, close=close, high=np.maximum(md.high, close),
                      low=np.minimum(md.low, close))
    np.testing.assert_array_equal(compute_features(changed, cfg)[: t + 1], base[: t + 1])


# ---------------------------------------------------------------- custom "module:callable"

def test_a_causal_custom_feature_is_stored_clipped_and_joins_the_warmup():
    from ffe_gym.config import FeatureConfig
    from ffe_gym.data import synthetic_market
    from ffe_gym.env import PortfolioEnv
    from ffe_gym.features import compute_features, lookback

    md = synthetic_market(3, 400, "crypto", seed=1)
    name = "custom_features:momentum_5"
    cfg = FeatureConfig(names=["log_return", name], clip=2.0, volatility_window=3,
                        rsi_window=3, macd_fast=2, macd_slow=3, macd_signal=1,
                        volume_window=3)
    feats = compute_features(md, cfg)
    want = np.zeros_like(md.close)
    want[5:] = 100.0 * np.log(md.close[5:] / md.close[:-5])
    np.testing.assert_array_equal(feats[:, :, 1], np.clip(want, -2.0, 2.0).astype(np.float32))
    assert lookback(cfg) == 6  # its lookback (5) beats the built-in windows (4)
    env = PortfolioEnv({"env": {"features": {"names": ["log_return", name]}}}, md)
    obs, _ = env.reset(seed=0)
    assert env.layout.features == ("log_return", name)
    np.testing.assert_array_equal(env.layout.feature(obs, name)[-1],
                                  env.core.features[env.portfolio.bar[0], :, 1])


@pytest.mark.parametrize("fn, message", [
    ("centred_mean", "is not causal"),
    ("whole_sample_z", "is not causal"),
    ("wrong_shape", "returned shape"),
    ("raises", "raised ValueError: no data for this"),
    ("not_callable", "is not callable"),
    ("absent", "cannot load feature"),
])
def test_a_custom_feature_that_breaks_its_contract_is_refused_by_name(fn, message):
    from ffe_gym.config import ConfigError
    from ffe_gym.data import synthetic_market
    from ffe_gym.env import PortfolioEnv

    md = synthetic_market(2, 300, "fx", seed=0)
    name = f"custom_features:{fn}"
    with pytest.raises(ConfigError, match=message) as err:
        PortfolioEnv({"env": {"features": {"names": ["log_return", name]}}}, md)
    assert name in str(err.value)


def test_feature_names_other_than_builtins_or_module_callable_are_refused():
    from ffe_gym.config import ConfigError, FeatureConfig

    for bad in (["momentum"], ["a b:c"], ["log_return", "log_return"]):
        with pytest.raises(ConfigError, match=r"env\.features\.names"):
            FeatureConfig(names=bad)
