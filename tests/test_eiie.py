"""EIIEPolicy and AssetNormalize: permutation, any N, one YAML for ffe-gym and rl_zoo3."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO

from ffe_agents import sb3
from ffe_agents.eiie import AssetNormalize, EIIEPolicy, resize
from ffe_gym.config import Config, ConfigError, from_dict
from ffe_gym.data import synthetic_market
from ffe_gym.env import PortfolioVectorEnv, SB3VecEnv
from ffe_gym.evaluation import env_for, rollout

ROOT = Path(__file__).resolve().parents[1]
W, F, P = 6, 6, 4


def policy(n: int, scheme: str, seed: int = 0) -> EIIEPolicy:
    """A randomly initialised policy with outputs far from zero (no small-gain head)."""
    env = PortfolioVectorEnv(1, {"env": {"action_scheme": scheme, "window": W,
                                         "confidence_levels": 2}},
                             synthetic_market(n, 300, seed=1))
    th.manual_seed(seed)
    return EIIEPolicy(env.single_observation_space, env.single_action_space,
                      lambda _: 1e-3, n_features=F, ortho_init=False)


def observation(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"market": rng.normal(size=(2, W * n * F)).astype(np.float32),
            "positions": rng.normal(size=(2, n * P)).astype(np.float32),
            "account": rng.normal(size=(2, 6)).astype(np.float32)}


def permuted(obs: dict[str, np.ndarray], perm: np.ndarray) -> dict[str, np.ndarray]:
    n = len(perm)
    return {"market": obs["market"].reshape(2, W, n, F)[:, :, perm].reshape(2, -1),
            "positions": obs["positions"].reshape(2, n, P)[:, perm].reshape(2, -1),
            "account": obs["account"]}


def outputs(pol: EIIEPolicy, obs: dict[str, np.ndarray]) -> np.ndarray:
    """The distribution's parameters (means or logits) for a batch."""
    with th.no_grad():
        t, _ = pol.obs_to_tensor(obs)
        latent = pol.mlp_extractor.forward_actor(pol.extract_features(t))
        return pol.action_net(latent).numpy()


@pytest.mark.parametrize("scheme", ["signals", "weights", "discrete"])
def test_actions_permute_with_the_assets(scheme):
    n = 7
    pol = policy(n, scheme)
    rng = np.random.default_rng(0)
    obs = observation(n, rng)
    perm = rng.permutation(n)
    a, b = outputs(pol, obs), outputs(pol, permuted(obs, perm))
    k = 5 if scheme == "discrete" else 1
    per_a = a[:, :n * k].reshape(2, n, k)
    per_b = b[:, :n * k].reshape(2, n, k)
    assert np.abs(per_a).max() > 0.05  # not trivially zero
    np.testing.assert_allclose(per_a[:, perm], per_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a[:, n * k:], b[:, n * k:], rtol=1e-5, atol=1e-6)  # cash
    with th.no_grad():
        v1 = pol.predict_values(pol.obs_to_tensor(obs)[0])
        v2 = pol.predict_values(pol.obs_to_tensor(permuted(obs, perm))[0])
    np.testing.assert_allclose(v1.numpy(), v2.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scheme", ["signals", "weights", "discrete"])
def test_parameters_do_not_depend_on_n_and_copies_of_the_assets_act_alike(scheme):
    """The same weights at N = 3 and N = 9; a 9-asset book that is three copies of a 3-asset
    book gets three copies of its actions (the mean over assets is the same)."""
    small, large = policy(3, scheme), policy(9, scheme, seed=1)
    assert [p.shape for p in small.parameters()] == [p.shape for p in large.parameters()]
    moved = resize(small, large.observation_space, large.action_space)
    rng = np.random.default_rng(1)
    obs = observation(3, rng)
    tripled = {"market": np.tile(obs["market"].reshape(2, W, 1, 3 * F), (1, 1, 3, 1))
               .reshape(2, -1),
               "positions": np.tile(obs["positions"], (1, 3)), "account": obs["account"]}
    a, b = outputs(small, obs), outputs(moved, tripled)
    k = 5 if scheme == "discrete" else 1
    np.testing.assert_allclose(np.tile(a[:, :3 * k], (1, 3)), b[:, :9 * k], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(a[:, 3 * k:], b[:, 9 * k:], rtol=1e-5, atol=1e-6)


def test_asset_normalize_keeps_one_statistic_per_feature_whatever_the_column_order():
    md = synthetic_market(4, 600, seed=3)
    perm = [2, 0, 3, 1]
    stats = []
    for data in (md, md.select([md.symbols[i] for i in perm])):
        env = AssetNormalize(SB3VecEnv(3, {"env": {"window": W}}, data), F)
        env.seed(0)
        env.reset()
        for _ in range(20):
            env.step(np.zeros((3, 4), dtype=np.float32))
        stats.append({k: (v.mean.copy(), v.var.copy()) for k, v in env.obs_rms.items()})
    assert stats[0]["market"][0].shape == (F,) and stats[0]["positions"][0].shape == (P,)
    for key in stats[0]:
        np.testing.assert_allclose(stats[0][key][0], stats[1][key][0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(stats[0][key][1], stats[1][key][1], rtol=1e-9, atol=1e-12)


def small_config() -> Config:
    return from_dict(Config, {"risk": {"on_portfolio_stop": "flat"},
                              "env": {"window": W, "episode_bars": 100},
                              "train": {"eval_freq": 256, "checkpoint_freq": 10**6,
                                        "embargo_bars": 40}})


def test_trained_at_five_assets_acts_at_twenty(tmp_path):
    spec = sb3.load_agent_spec(ROOT / "configs" / "agents" / "ppo.yaml")
    spec.n_envs = 4
    spec.kwargs.update(n_steps=32, batch_size=64, n_epochs=1)
    sb3.train(spec, small_config(), synthetic_market(5, 900, seed=2), tmp_path, seed=0,
              timesteps=512, progress=False)
    pol = sb3.load_policy(tmp_path)
    assert pol.model.policy.n_assets == 5
    big = synthetic_market(20, 400, seed=4)
    r = rollout(pol, env_for(pol, small_config(), big), window=(200, 260), seed=0)
    assert r.steps == 60 and pol.policy.n_assets == 20
    assert r.weights.shape[1] == 20


def test_the_yaml_must_agree_with_the_env_and_the_algorithm(tmp_path):
    spec = sb3.load_agent_spec(ROOT / "configs" / "agents" / "ppo.yaml")
    cfg = small_config()
    cfg.env.features.names = ["log_return", "range"]
    with pytest.raises(ConfigError, match=r"n_features is 6 but env\.features\.names has 2"):
        sb3.policy_setup(spec, cfg)
    spec.policy_kwargs.pop("n_features")
    assert sb3.policy_setup(spec, cfg)["n_features"] == 2
    spec.algo = "sac"
    with pytest.raises(ConfigError, match="EIIEPolicy is for ppo and a2c"):
        sb3.policy_setup(spec, cfg)


def test_the_alias_is_registered_on_ppo_and_a2c():
    from stable_baselines3 import A2C

    assert PPO.policy_aliases["EIIEPolicy"] is EIIEPolicy
    assert A2C.policy_aliases["EIIEPolicy"] is EIIEPolicy


def test_rl_zoo3_trains_with_the_same_yaml_and_the_run_is_a_policy(tmp_path):
    """configs/agents/ppo.yaml as rl_zoo3 reads it: python -m rl_zoo3.train ... --gym-packages
    ffe_gym ffe_agents.eiie; its run folder loads and trades in ffe-gym."""
    pytest.importorskip("rl_zoo3")
    cmd = [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "ffe/Portfolio-v0",
           "--conf-file", str(ROOT / "configs" / "agents" / "ppo.yaml"),
           "--gym-packages", "ffe_gym", "ffe_agents.eiie", "-n", "2048", "-f",
           str(tmp_path / "logs"), "--eval-freq", "-1", "--seed", "0", "--verbose", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "logs" / "ppo" / "ffe-Portfolio-v0_1"
    pol = sb3.load_policy(run)
    assert type(pol.model.policy).__name__ == "EIIEPolicy"
    r = rollout(pol, env_for(pol, None, None), window=(5000, 5050), seed=0)
    assert r.steps == 50
