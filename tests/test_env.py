"""PortfolioEnv and PortfolioVectorEnv: checkers, determinism, pickling, look-ahead, equality."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from helpers import SHARED_DATA, bare, market

import ffe_gym  # noqa: F401  (registers the environments)
from ffe_gym.config import Config, from_dict
from ffe_gym.data import MarketData, load_market, synthetic_market
from ffe_gym.env import PortfolioEnv, PortfolioVectorEnv
from ffe_gym.env.rewards import DifferentialSharpe, StepOutcome
from ffe_gym.portfolio import Portfolio
from ffe_gym.portfolio import layout as L

SCHEMES = ["signals", "discrete", "single", "weights"]
OBS = ["dict", "flat"]


def cfg(**env) -> Config:
    base = {"risk": {"on_portfolio_stop": "flat"}, "env": {"episode_bars": 300, **env}}
    return from_dict(Config, base)


@pytest.fixture(scope="module")
def md() -> MarketData:
    return synthetic_market(4, 1500, "crypto", seed=11)


def same(a, b, path="") -> None:
    """Exact recursive equality of observations / infos."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert a == b or (a != a and b != b), f"{path}: {a!r} != {b!r}"


# ---------------------------------------------------------------- checkers


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("obs", OBS)
def test_gymnasium_and_sb3_env_checkers_pass_silently(md, scheme, obs):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make("ffe/Portfolio-v0", config=cfg(action_scheme=scheme, observation=obs),
                       data=md, render_mode="rgb_array")
        check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(PortfolioEnv(cfg(action_scheme=scheme, observation=obs), md), warn=True)


def test_make_with_no_arguments_and_module_prefix():
    env = gym.make("ffe/Portfolio-v0")
    obs, info = env.reset(seed=0)
    assert set(obs) == {"market", "positions", "account"}
    assert info["equity"] == 10_000.0
    assert env.unwrapped.market.is_synthetic
    code = ("import gymnasium as gym; e = gym.make('ffe_gym:ffe/Portfolio-v0'); "
            "o, i = e.reset(seed=1); print(type(e.unwrapped).__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "PortfolioEnv" in r.stdout


def test_import_has_no_side_effects():
    # dependencies first: numpy and gymnasium add warning filters of their own on import
    code = """
import sys, warnings, numpy as np, pandas, numba, gymnasium, yaml, rich
writes = []
def hook(event, args):
    mode = args[1] if len(args) > 1 else None
    if event == "open" and isinstance(mode, str) and set(mode) & set("wax+"):
        writes.append(args[0])
sys.addaudithook(hook)
filters = list(warnings.filters)
state = np.random.get_state()[1].copy()
import ffe_gym
assert warnings.filters == filters, "warning filters changed"
assert (np.random.get_state()[1] == state).all(), "global RNG touched"
assert not writes, writes
print("clean")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "clean" in r.stdout


def test_make_vec_vector_entry_point(md):
    venv = gym.make_vec("ffe/Portfolio-v0", num_envs=3, vectorization_mode="vector_entry_point",
                        config=cfg(), data=md)
    assert isinstance(venv.unwrapped, PortfolioVectorEnv)
    obs, info = venv.reset(seed=0)
    assert obs["market"].shape == (3, venv.unwrapped.core.observations.sizes["market"])
    obs, r, te, tr, info = venv.step(venv.action_space.sample())
    assert r.shape == (3,) and info["equity"].shape == (3,)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP


# ---------------------------------------------------------------- spaces and actions


def test_observation_layout_and_view(md):
    env = PortfolioEnv(cfg(window=5), md)
    obs, _ = env.reset(seed=0)
    W, N, F = 5, md.n_assets, len(env.config.env.features.names)
    view = env.view(obs)
    assert view.shape == (W, N, F)
    t = env.portfolio.bar[0]
    np.testing.assert_array_equal(view, env.core.features[t - W + 1: t + 1])
    flat = PortfolioEnv(cfg(window=5, observation="flat"), md)
    fobs, _ = flat.reset(seed=0)
    np.testing.assert_array_equal(flat.view(fobs), view)
    np.testing.assert_array_equal(fobs, np.concatenate([obs["market"], obs["positions"],
                                                        obs["account"]]))
    assert all(np.all(np.abs(v) <= 10.0) for v in obs.values())


def test_signals_dead_band_and_confidence(md):
    env = PortfolioEnv(cfg(dead_band=0.2), md)
    env.reset(seed=0)
    env.step(np.array([0.9, -0.15, 0.0, -0.7], np.float32))
    dirs, confs = env.portfolio.intent_buffers()
    assert list(dirs[0]) == [1, 0, 0, -1]
    np.testing.assert_allclose(confs[0], [0.9, 0.15, 0.0, 0.7], rtol=1e-6)


def test_discrete_levels(md):
    env = PortfolioEnv(cfg(action_scheme="discrete", confidence_levels=2), md)
    env.reset(seed=0)
    assert env.action_space.nvec.tolist() == [5, 5, 5, 5]
    env.step(np.array([0, 1, 2, 4]))
    dirs, confs = env.portfolio.intent_buffers()
    assert list(dirs[0]) == [-1, -1, 0, 1]
    np.testing.assert_allclose(confs[0], [1.0, 0.5, 0.0, 1.0])


def test_single_buys_or_sells_one_asset_and_holds_the_rest(md):
    env = PortfolioEnv(cfg(action_scheme="single"), md)
    env.reset(seed=0)
    assert env.action_space == gym.spaces.Discrete(9)  # 2N + 1, N = 4
    scheme, pf = env.core.scheme, env.portfolio
    for action, want in [(0, [0, 0, 0, 0]), (1, [1, 0, 0, 0]), (4, [0, 0, 0, 1]),
                         (5, [-1, 0, 0, 0]), (7, [0, 0, -1, 0]), (8, [0, 0, 0, -1])]:
        dirs, confs = scheme.intents(np.array([action]), 1)
        assert dirs[0].tolist() == want and confs[0].tolist() == np.abs(want).tolist()
    env.step(np.int64(3))  # a scalar, as DQN's predict gives one env
    dirs, confs = pf.intent_buffers()
    assert list(dirs[0]) == [0, 0, 1, 0] and list(confs[0]) == [0.0, 0.0, 1.0, 0.0]
    assert env.portfolio.units[0, 2] > 0 and (env.portfolio.units[0, [0, 1, 3]] == 0).all()
    for bad, message in [(9, r"0\.\.8"), (-1, r"0\.\.8"), (1.0, "integer")]:
        with pytest.raises(ValueError, match=message):
            env.step(np.asarray(bad))


def test_weights_normalisation_and_long_only(md):
    env = PortfolioEnv(cfg(action_scheme="weights"), md)
    w = env.core.scheme.target(np.array([[0.5, -0.25, 0.0, 0.0, 0.25]]), 1)
    np.testing.assert_allclose(w, [[0.5, -0.25, 0.0, 0.0]])
    assert np.all(env.core.scheme.target(np.zeros((1, 5)), 1) == 0)
    long_only = from_dict(Config, {"risk": {"allow_short": False},
                                   "env": {"action_scheme": "weights"}})
    env = PortfolioEnv(long_only, md)
    w = env.core.scheme.target(np.array([[0.5, -0.5, 0.0, 0.0, 0.5]]), 1)
    np.testing.assert_allclose(w, [[0.5, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("action, message", [
    (np.zeros(3, np.float32), "shape"),
    (np.zeros((4, 1), np.float32), "shape"),
    (np.array([np.nan, 0, 0, 0], np.float32), "NaN"),
    (np.array([1.5, 0, 0, 0], np.float32), r"\[-1, 1\]"),
    (np.array(["a", "b", "c", "d"]), "float"),
])
def test_bad_actions_raise_and_change_nothing(md, action, message):
    env = PortfolioEnv(cfg(), md)
    env.reset(seed=0)
    before = env.portfolio.get_state()
    with pytest.raises(ValueError, match=message):
        env.step(action)
    after = env.portfolio.get_state()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_step_after_the_end_and_before_reset_raise(md):
    env = PortfolioEnv(cfg(), md)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4, np.float32))
    env.reset(seed=0, options={"start": 100, "end": 102})
    env.step(np.zeros(4, np.float32))
    _, _, term, trunc, info = env.step(np.zeros(4, np.float32))
    assert trunc and not term and info["status"] == "end_of_data"
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4, np.float32))


def test_reset_windows_dates_and_errors(md):
    env = PortfolioEnv(cfg(), md)
    _, info = env.reset(options={"start": str(md.index[200]), "end": str(md.index[260])})
    assert info["bar"] == 200 and env.portfolio.clock[0, 1] == 260
    with pytest.raises(ValueError, match="not allowed"):
        env.reset(options={"start": 2})
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"begin": 10})
    starts = {env.reset(seed=s)[1]["bar"] for s in range(5)}
    assert len(starts) > 1  # random starts for training
    assert env.reset(seed=3)[1]["bar"] == env.reset(seed=3)[1]["bar"]


# ---------------------------------------------------------------- determinism, pickling


def _rollout(env, seed, n, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    out = [env.reset(seed=seed)]
    for _ in range(n):
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        step = env.step(a)
        out.append(step)
        if step[2] or step[3]:
            out.append(env.reset())
    return out


def test_same_seed_same_actions_identical_trajectories(md):
    a = _rollout(PortfolioEnv(cfg(), md), 5, 400)
    b = _rollout(PortfolioEnv(cfg(), md), 5, 400)
    same(a, b)


def test_pickle_round_trip_single_and_vector(md):
    env = PortfolioEnv(cfg(), md)
    env.reset(seed=2)
    rng = np.random.default_rng(0)
    for _ in range(20):
        env.step(rng.uniform(-1, 1, 4).astype(np.float32))
    clone = pickle.loads(pickle.dumps(env))
    for _ in range(30):
        a = rng.uniform(-1, 1, 4).astype(np.float32)
        same(env.step(a), clone.step(a))
    venv = PortfolioVectorEnv(3, cfg(), md)
    venv.reset(seed=1)
    vclone = pickle.loads(pickle.dumps(venv))
    for _ in range(30):
        a = rng.uniform(-1, 1, (3, 4)).astype(np.float32)
        same(venv.step(a), vclone.step(a))


# ---------------------------------------------------------------- rewards


def test_sum_of_log_rewards_is_log_growth(md):
    env = PortfolioEnv(cfg(), md)
    rng = np.random.default_rng(1)
    for episode in range(5):
        env.reset(seed=episode)
        total = 0.0
        done = False
        while not done:
            _, r, term, trunc, info = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
            total += r
            done = term or trunc
        assert info["status"] != "ruin"
        assert total == pytest.approx(np.log(info["equity"] / 10_000.0), abs=1e-9)


def test_ruin_gives_a_clipped_reward():
    m = market([100.0, 100.0, 100.0, 0.5, 0.5, 0.5])
    c = bare(sizing={"risk_per_trade": 1.0}, risk={"ruin_floor": 0.2},
             env={"window": 1, "episode_bars": None,
                  "features": {"names": ["log_return"], "volatility_window": 2,
                               "rsi_window": 2, "macd_fast": 1, "macd_slow": 2,
                               "macd_signal": 1, "volume_window": 2}})
    env = PortfolioEnv(c, m)
    env.reset(options={"start": 1, "end": 5})
    env.step(np.ones(1, np.float32))
    _, r, term, _, info = env.step(np.ones(1, np.float32))
    assert term and info["status"] == "ruin"
    assert r == pytest.approx(np.log(0.2 * 10_000 / 10_000))


def test_differential_sharpe_by_hand():
    dsr = DifferentialSharpe(1, eta=0.5)
    eq = 100.0
    out = []
    for r in (0.01, -0.02, 0.03):
        new = eq * (1 + r)
        out.append(dsr(StepOutcome(np.array([eq]), np.array([new]), 1.0, np.zeros(1),
                                   np.zeros(1)))[0])
        eq = new
    # by hand: A, B start at 0; step 1 has no variance yet
    a, b = 0.0, 0.0
    expected = []
    for r in (0.01, -0.02, 0.03):
        da, db = r - a, r * r - b
        var = b - a * a
        expected.append((b * da - 0.5 * a * db) / var**1.5 if var > 1e-12 else 0.0)
        a, b = a + 0.5 * da, b + 0.5 * db
    np.testing.assert_allclose(out, expected, rtol=1e-9)


def test_penalties_are_subtracted(md):
    c = from_dict(Config, {"env": {"reward": {"drawdown_penalty": 2.0,
                                              "turnover_penalty": 0.5}}})
    env = PortfolioEnv(c, md)
    env.reset(seed=0)
    before = env.portfolio.equity[0]
    traded_before = env.portfolio.acct[0, 4]
    _, r, *_ = env.step(np.array([0.9, 0.9, 0, 0], np.float32))
    pf = env.portfolio
    traded = pf.acct[0, 4] - traded_before
    expected = (np.log(pf.equity[0] / before) - 2.0 * max(pf.drawdown()[0], 0.0)
                - 0.5 * traded / before)
    assert r == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- info and render


def test_info_contents(md):
    env = PortfolioEnv(cfg(), md)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([0.9, -0.8, 0, 0], np.float32))
    for key in ("equity", "cash", "weights", "fills", "refused", "stop_events", "costs",
                "drawdown", "var", "attribution", "status"):
        assert key in info
    assert len(info["fills"]) >= 1 and info["fills"][0]["reason"] == "signal"
    assert info["costs"]["fees"] > 0
    att = info["attribution"]
    assert att["pnl"].sum() == pytest.approx(info["equity"] - 10_000, abs=1e-6)
    assert info["var"] > 0
    assert info["weights"][0] > 0 and info["weights"][1] < 0


def test_render_modes(md):
    env = PortfolioEnv(cfg(), md, render_mode="ansi")
    env.reset(seed=0)
    env.step(np.array([0.9, 0, 0, 0], np.float32))
    text = env.render()
    assert "equity" in text and "SYN_C1" in text and "SYNTHETIC" in text
    env = PortfolioEnv(cfg(), md, render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(10):
        env.step(np.array([0.9, -0.5, 0, 0], np.float32))
    img = env.render()
    assert img.dtype == np.uint8 and img.shape == (480, 640, 3)
    assert img.std() > 0
    with pytest.raises(ValueError, match="render_mode"):
        PortfolioEnv(cfg(), md, render_mode="human")


def test_record_video_writes_an_mp4_of_an_episode(md, tmp_path):
    """Gymnasium's RecordVideo with the video extra (MoviePy, imageio's ffmpeg)."""
    pytest.importorskip("moviepy", reason="the video extra: pip install 'ffe-gym[video]'")
    from gymnasium.wrappers import RecordVideo

    env = RecordVideo(PortfolioEnv(cfg(episode_bars=12), md, render_mode="rgb_array"),
                      str(tmp_path / "videos"), episode_trigger=lambda k: True,
                      disable_logger=True)
    env.reset(seed=0)
    done = False
    while not done:
        *_, terminated, truncated, _ = env.step(np.array([0.9, -0.5, 0, 0], np.float32))
        done = terminated or truncated
    env.close()
    video = tmp_path / "videos" / "rl-video-episode-0.mp4"
    assert video.stat().st_size > 1000
    assert video.read_bytes()[4:8] == b"ftyp"  # an MP4 container


def test_sb3_make_vec_env_asks_for_rgb_array_without_warning(md):
    from stable_baselines3.common.env_util import make_vec_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        venv = make_vec_env("ffe/Portfolio-v0", n_envs=2,
                            env_kwargs={"config": cfg(), "data": md})
        venv.reset()
        venv.step(np.zeros((2, 4), np.float32))


# ---------------------------------------------------------------- vector env


def test_vector_env_equals_single_envs(md):
    n = 4
    c = cfg()
    c.env.episode_bars = 60  # several autoresets within the run
    venv = PortfolioVectorEnv(n, c, md)
    envs = [PortfolioEnv(c, md) for _ in range(n)]
    vobs, _ = venv.reset(seed=7)
    for i, e in enumerate(envs):
        e.reset(seed=7 + i)
    pending = [False] * n
    rng = np.random.default_rng(3)
    for _ in range(250):
        actions = rng.uniform(-1, 1, (n, 4)).astype(np.float32)
        vobs, vr, vte, vtr, vinfo = venv.step(actions)
        for i, e in enumerate(envs):
            if pending[i]:
                o, _ = e.reset()
                r, te, tr = 0.0, False, False
            else:
                o, r, te, tr, info = e.step(actions[i])
            pending[i] = te or tr
            for k in o:
                np.testing.assert_array_equal(vobs[k][i], o[k])
            assert vr[i] == pytest.approx(r, rel=1e-12, abs=1e-15)
            assert (vte[i], vtr[i]) == (te, tr)
            assert vinfo["equity"][i] == pytest.approx(e.portfolio.equity[0], rel=1e-12)


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_vector_env_without_copy_or_step_info_gives_the_same_steps(md, mode):
    c = cfg()
    c.env.episode_bars = 40  # autoresets inside the run
    full = PortfolioVectorEnv(3, c, md, autoreset_mode=mode)
    lean = PortfolioVectorEnv(3, c, md, autoreset_mode=mode, step_info=False, copy=False)
    a, _ = full.reset(seed=5)
    b, info = lean.reset(seed=5)
    first = b["market"]
    rng = np.random.default_rng(1)
    for _ in range(120):
        actions = rng.uniform(-1, 1, (3, 4)).astype(np.float32)
        a, ra, ta, ua, ia = full.step(actions)
        b, rb, tb, ub, ib = lean.step(actions)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(ra, rb)
        assert (ta == tb).all() and (ua == ub).all()
        assert np.shares_memory(b["market"], first)  # one buffer, overwritten every step
        assert "equity" in ia and "equity" not in ib
        if "portfolio_episode" in ia:
            np.testing.assert_array_equal(ia["portfolio_episode"]["return"],
                                          ib["portfolio_episode"]["return"])
        if "final_obs" in ia:  # the last observation is its own array, not the buffer
            assert not np.shares_memory(ib["final_obs"]["market"], first)
            np.testing.assert_array_equal(ia["final_obs"]["market"], ib["final_obs"]["market"])



def test_single_env_without_step_info_gives_the_same_steps(md):
    full = PortfolioEnv(cfg(episode_bars=60), md)
    lean = PortfolioEnv(cfg(episode_bars=60), md, step_info=False)
    a, ia = full.reset(seed=4)
    b, ib = lean.reset(seed=4)
    same(a, b)
    same(ia, ib)  # reset keeps the full info
    rng = np.random.default_rng(3)
    ends = 0
    for _ in range(150):
        action = rng.uniform(-1, 1, 4).astype(np.float32)
        a, ra, ta, ua, ia = full.step(action)
        b, rb, tb, ub, ib = lean.step(action)
        same(a, b)
        assert (ra, ta, ua) == (rb, tb, ub)
        if ta or ua:
            assert ib.keys() == {"portfolio_episode"}
            same(ia["portfolio_episode"], ib["portfolio_episode"])
            ends += 1
            full.reset(seed=ends)
            lean.reset(seed=ends)
        else:
            assert ib == {} and "equity" in ia
    assert ends >= 2


def test_threaded_engine_step_is_the_serial_one_bit_for_bit(md):
    """threads=2 splits the books over numba's threads (the engine step and the observations);
    every number stays the serial one."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread on this machine")
    c = cfg()
    c.env.episode_bars = 40
    c.risk.max_positions = 2  # refusals and stops happen, so every branch is compared
    serial = PortfolioVectorEnv(7, c, md)  # 7 books over 2 chunks: uneven ranges
    threaded = PortfolioVectorEnv(7, c, md, threads=2)
    a, _ = serial.reset(seed=3)
    b, _ = threaded.reset(seed=3)
    rng = np.random.default_rng(2)
    ended = 0
    for _ in range(200):
        actions = rng.uniform(-1, 1, (7, 4)).astype(np.float32)
        a, ra, ta, ua, ia = serial.step(actions)
        b, rb, tb, ub, ib = threaded.step(actions)
        same(a, b)
        same(ia, ib)
        np.testing.assert_array_equal(ra, rb)
        assert (ta == tb).all() and (ua == ub).all()
        ended += int((ta | ua).sum())
    assert ended > 0  # autoresets were inside the comparison
    np.testing.assert_array_equal(serial.core.portfolio.count, threaded.core.portfolio.count)
    assert serial.core.portfolio.count[:, 1:].sum() > 0  # some openings were refused
    with pytest.raises(ValueError, match="NUMBA_NUM_THREADS"):
        PortfolioVectorEnv(2, c, md, threads=numba.config.NUMBA_NUM_THREADS + 1)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        PortfolioVectorEnv(2, c, md, threads=0)

def test_vector_env_same_step_autoreset(md):
    c = cfg()
    c.env.episode_bars = 10
    venv = PortfolioVectorEnv(2, c, md, autoreset_mode="SameStep")
    venv.reset(seed=0)
    for _ in range(10):
        obs, r, te, tr, info = venv.step(np.zeros((2, 4), np.float32))
    assert tr.all()
    assert "final_obs" in info and info["_final_obs"].all()
    assert (info["bar"] != info["final_info"]["bar"]).all()  # already reset


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_gymnasium_record_episode_statistics_on_the_vector_env(md, mode):
    # before: "key 'episode' already exists in info" at the first episode end
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    c = cfg()
    c.env.episode_bars = 6
    venv = RecordEpisodeStatistics(PortfolioVectorEnv(3, c, md, autoreset_mode=mode))
    obs, _ = venv.reset(seed=0)
    total = np.zeros(3)
    ended = []
    for _ in range(14):  # a CleanRL-style loop: act, step, read episode ends from info
        actions = venv.action_space.sample()
        obs, r, te, tr, info = venv.step(actions)
        total += r
        if "episode" in info:
            done = info["_episode"]
            ended.append(int(done.sum()))
            assert set(info["episode"]) == {"r", "l", "t"}
            assert (info["episode"]["l"][done] == 6).all()
            assert info["_portfolio_episode"][done].all()
            assert set(info["portfolio_episode"]) >= {"equity", "return", "sharpe"}
    assert sum(ended) >= 3


def test_sb3_vec_env_adapter(md):
    from ffe_gym.env import SB3VecEnv

    c = cfg()
    c.env.episode_bars = 8
    venv = SB3VecEnv(3, c, md)
    venv.seed(5)
    obs = venv.reset()
    assert obs["market"].shape[0] == 3
    for _ in range(8):
        obs, rewards, dones, infos = venv.step(np.zeros((3, 4), np.float32))
    assert dones.all() and rewards.dtype == np.float32
    for info in infos:
        assert info["TimeLimit.truncated"] is True
        assert set(info["terminal_observation"]) == {"market", "positions", "account"}


# ---------------------------------------------------------------- look-ahead


def _perturb_after(md: MarketData, t: int, seed: int) -> MarketData:
    """The same panel with every open, high, low, close and volume after bar t changed."""
    rng = np.random.default_rng(seed)
    T, N = md.close.shape
    f = np.ones((T, N))
    f[t + 1:] = np.exp(rng.normal(0, 0.05, (T - t - 1, N)))
    vol = md.volume.copy()
    vol[t + 1:] *= rng.uniform(0.1, 10, (T - t - 1, N))
    return MarketData(md.symbols, md.index, md.open * f, md.high * f, md.low * f,
                      md.close * f, vol, md.tradable, md.periods_per_year, md.source)


def _trajectory_until(env: PortfolioEnv, t: int, start: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    out = [env.reset(seed=0, options={"start": start, "end": env.market.n_bars - 1})]
    n = env.action_space.shape[0]
    while env.portfolio.bar[0] < t:
        step = env.step(rng.uniform(-1, 1, n).astype(np.float32))
        if env.portfolio.bar[0] > t:
            break
        out.append(step)
        if step[2] or step[3]:
            break
    return out


def _check_no_lookahead(md: MarketData, c: Config, times: list[int]) -> None:
    base = PortfolioEnv(c, md)
    start = base.core.first_bar
    for k, t in enumerate(times):
        changed = PortfolioEnv(c, _perturb_after(md, t, k))
        same(_trajectory_until(base, t, start, k), _trajectory_until(changed, t, start, k))


@pytest.mark.parametrize("execution", ["next_open", "close"])
@pytest.mark.parametrize("frequency", [1, 3])
def test_no_lookahead_synthetic(execution, frequency):
    md = synthetic_market(3, 400, "mixed", seed=5)
    c = from_dict(Config, {"execution": {"price": execution},
                           "portfolio": {"rebalancing_frequency": frequency},
                           "risk": {"on_portfolio_stop": "flat"},
                           "env": {"window": 8, "episode_bars": None}})
    rng = np.random.default_rng(frequency)
    times = [10, 20] + sorted(rng.integers(40, 390, 4).tolist())  # 10, 20: inside warm-up
    _check_no_lookahead(md, c, times)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared data is absent")
def test_no_lookahead_real_hourly_data():
    md = load_market(SHARED_DATA, calendar="union", start="2021-03-01", end="2021-04-15")
    c = from_dict(Config, {"risk": {"on_portfolio_stop": "flat"},
                           "env": {"episode_bars": None}})
    _check_no_lookahead(md, c, [30, 300, 700])


def test_float16_signals_are_accepted_like_float32():
    # before: a numba TypingError from the compiled signal mapping
    runs = []
    for dtype in (np.float16, np.float32):
        env = gym.make("ffe/Portfolio-v0")
        env.reset(seed=0)
        out = env.step(np.array([0.5, -0.5, 0.0, 0.25, 1.0], dtype=dtype))
        runs.append((out[1], out[4]["equity"]))
        env.close()
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match="float array"):
        env = gym.make("ffe/Portfolio-v0")
        env.reset(seed=0)
        env.step(np.zeros(5, dtype=np.int64))


def test_one_ruin_floor_and_never_a_nan():
    # before: ruin_floor 0 and a 99% fee ran on to equity 2.4e-309, rewards summed to +90,865
    # for a true log return of -720, and observations held NaN
    cfg = bare(risk={"ruin_floor": 0.0}, execution={"fee_rate": 0.99},
               sizing={"risk_per_trade": 0.25})
    rng = np.random.default_rng(0)
    close = 100.0 * np.cumprod(1 + 0.01 * rng.standard_normal((400, 2)), axis=0)
    env = PortfolioEnv(cfg, market(close))
    obs, info = env.reset(options={"start": 30})
    total, done, steps = 0.0, False, 0
    while not done:
        a = np.where(steps % 2 == 0, 1.0, -1.0) * np.ones(2, dtype=np.float32)
        obs, r, terminated, truncated, info = env.step(a.astype(np.float32))
        assert np.isfinite(r) and all(np.isfinite(v).all() for v in obs.values())
        total += r
        done = terminated or truncated
        steps += 1
    floor = 1e-9 * 10_000.0
    assert terminated and info["status"] == "ruin"
    assert total == pytest.approx(np.log(max(info["equity"], floor) / 10_000.0), rel=1e-9)
    assert env.unwrapped.core.floor == env.unwrapped.portfolio.params[L.P_RUIN] == floor


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_step_is_the_engine_step_then_the_observation(md, threads):
    """The env's one compiled call (engine step, settling, observations) gives what the
    engine's own step followed by a separate observation build and numpy's reward give."""
    import numba

    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("numba has one thread on this machine")
    c = cfg()
    c.env.episode_bars = 30
    env = PortfolioVectorEnv(5, c, md, copy=False, threads=threads)
    ref = Portfolio(md, c, n_books=5)  # the engine alone, stepped with the same intents
    env.reset(seed=4)
    ref.set_state(env.core.portfolio.get_state())
    rng = np.random.default_rng(8)
    for _ in range(25):
        actions = rng.uniform(-1, 1, (5, 4)).astype(np.float32)
        before = ref.acct[:, L.EQUITY].copy()
        d = np.where(np.abs(actions) < c.env.dead_band, 0, np.sign(actions)).astype(np.int8)
        ref.step_signals(d, np.abs(actions).astype(np.float64))
        obs, rewards, term, trunc, _ = env.step(actions)
        same(env.core.portfolio.get_state(), ref.get_state())
        same(obs, env.core.observations.build(ref))
        floor = env.core.floor
        np.testing.assert_allclose(  # numpy's log and the compiled one may differ in an ulp
            rewards, np.log(np.maximum(ref.acct[:, L.EQUITY], floor) / before), rtol=1e-15)
        status = ref.clock[:, L.STATUS]
        assert (trunc == (status == L.ENDED)).all()
        assert (term == np.isin(status, [L.STOPPED, L.RUINED])).all()
        if (term | trunc).any():
            break


def test_strided_and_float64_actions_step_like_contiguous_float32(md):
    """float32 signals are decoded inside the step's compiled call, other dtypes before it,
    both without numba's dispatch (typed for any strides): a strided view, a float64 copy, a
    big-endian copy and a read-only array of the same float32 values step exactly like the
    contiguous float32 array."""
    rng = np.random.default_rng(3)
    acts = rng.uniform(-1, 1, (40, 8)).astype(np.float32)  # every other column: strided rows
    runs = []
    for form in ("c", "strided", "f8", "big-endian", "readonly"):
        env = PortfolioEnv(cfg(), md)
        env.reset(seed=5)
        run = []
        for k in range(40):
            a = np.ascontiguousarray(acts[k, ::2])
            if form == "strided":
                a = acts[k, ::2]
                assert not a.flags.c_contiguous
            elif form == "f8":
                a = a.astype(np.float64)
            elif form == "big-endian":  # dtype.char is "f" too, but not the native layout
                a = a.astype(">f4")
            elif form == "readonly":
                a.flags.writeable = False
            run.append(env.step(a))
        runs.append(run)
    for other in runs[1:]:
        same(runs[0], other)


def test_core_refuses_a_wrong_output_buffer_or_mask_and_changes_nothing(md):
    """The compiled step's entry point does not check types, so EnvCore does: a buffer of the
    wrong dtype, shape or layout, or a mask of the wrong length, is refused before the step."""
    venv = PortfolioVectorEnv(3, cfg(), md, copy=False)
    venv.reset(seed=0)
    core = venv.core
    actions = np.full((3, 4), 0.9, dtype=np.float32)
    before = core.portfolio.get_state()
    for out in (np.empty((3, core.observations.total), np.float64),
                np.empty((2, core.observations.total), np.float32),
                np.empty((core.observations.total, 3), np.float32).T, [0.0]):
        with pytest.raises(ValueError, match="out must be"):
            core.step(actions, None, out)
    with pytest.raises(ValueError, match="active must have shape"):
        core.step(actions, np.ones(2, dtype=bool))
    same(core.portfolio.get_state(), before)
    strided = np.ones(6, dtype=bool)[::2]  # a strided mask is copied, not refused
    obs, *_ = core.step(actions, strided)
    assert obs.shape == (3, core.observations.total)
    good = np.empty((3, core.observations.total), np.float32)
    core.step(actions, None, good)  # accepted once ...
    before = core.portfolio.get_state()
    good.shape = (1, 3 * core.observations.total)  # ... then reshaped in place: same object
    with pytest.raises(ValueError, match="out must be"):
        core.step(actions, None, good)
    with pytest.raises(ValueError, match="out must be"):
        core.observe(good)
    same(core.portfolio.get_state(), before)


@pytest.mark.parametrize("threads", [1, 2])
def test_bad_signals_in_one_book_of_a_batch_change_no_book(md, threads):
    """The fused decode checks the whole batch before it writes an intent or steps a book."""
    venv = PortfolioVectorEnv(3, cfg(), md, threads=threads)
    venv.reset(seed=0)
    rng = np.random.default_rng(1)
    venv.step(rng.uniform(-1, 1, (3, 4)).astype(np.float32))
    before = venv.core.portfolio.get_state()
    for bad, message in ((np.nan, "NaN"), (1.5, r"\[-1, 1\]")):
        a = rng.uniform(-1, 1, (3, 4)).astype(np.float32)
        a[2, 3] = bad
        with pytest.raises(ValueError, match=message):
            venv.step(a)
        same(venv.core.portfolio.get_state(), before)
