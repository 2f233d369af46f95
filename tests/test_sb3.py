"""stable-baselines3 agents: zoo-format specs, training, saving, exact reloads, TensorBoard."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

from ffe_agents import sb3
from ffe_gym.config import Config, ConfigError, from_dict
from ffe_gym.data import synthetic_market
from ffe_gym.evaluation import env_for, rollout

ROOT = Path(__file__).resolve().parents[1]
TINY = {"n_steps": 32, "batch_size": 32, "n_epochs": 1}


@pytest.fixture(scope="module")
def md():
    return synthetic_market(3, 1200, "crypto", seed=2)


def cfg() -> Config:
    return from_dict(Config, {"risk": {"on_portfolio_stop": "flat"},
                              "env": {"window": 8, "episode_bars": 100},
                              "train": {"eval_freq": 128, "checkpoint_freq": 128,
                                        "embargo_bars": 40}})


def spec(algo: str, **override) -> sb3.AgentSpec:
    s = sb3.load_agent_spec(ROOT / "configs" / "agents" / f"{algo}.yaml")
    s.n_envs = 2
    s.kwargs.update(override)
    s.policy_kwargs = {**s.policy_kwargs, "net_arch": [16]} if algo != "recurrent_ppo" else \
        {"net_arch": [16], "lstm_hidden_size": 8}
    return s


def acts_as_model(policy, model, env, obs, info, steps: int) -> None:
    """The loaded policy's action equals the model's on the frozen-normalised observation."""
    for _ in range(steps):
        batch = policy.normalizer.normalize_obs({k: v[None] for k, v in obs.items()})
        expected, _ = model.predict(batch, deterministic=True)
        action = policy.act(obs, info)
        np.testing.assert_array_equal(action, expected[0])
        obs, _, term, trunc, info = env.step(action)
        if term or trunc:
            break


def scalars(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for run in glob.glob(str(folder / "tb" / "*")):
        ea = EventAccumulator(run)
        ea.Reload()
        tags |= set(ea.Tags()["scalars"])
    return tags


def test_every_agent_file_loads_in_zoo_format():
    for algo in sb3.ALGOS:
        s = sb3.load_agent_spec(ROOT / "configs" / "agents" / f"{algo}.yaml")
        assert s.algo == algo and s.n_timesteps > 0 and s.normalize is not None



def test_lin_schedules_decay_linearly(tmp_path):
    f = tmp_path / "ppo.yaml"
    f.write_text("ffe/Portfolio-v0:\n  n_timesteps: 10\n  policy: MlpPolicy\n"
                 "  learning_rate: lin_3e-4\n")
    lr = sb3.load_agent_spec(f).kwargs["learning_rate"]
    assert lr(1.0) == pytest.approx(3e-4) and lr(0.5) == pytest.approx(1.5e-4)


def test_spec_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "ppo.yaml"
    bad.write_text("other/Env-v0:\n  policy: MlpPolicy\n")
    with pytest.raises(ConfigError, match="no section for 'ffe/Portfolio-v0'"):
        sb3.load_agent_spec(bad)
    bad.write_text("ffe/Portfolio-v0:\n  policy: MlpPolicy\n")
    with pytest.raises(ConfigError, match="missing key 'n_timesteps'"):
        sb3.load_agent_spec(bad)
    bad.write_text("ffe/Portfolio-v0:\n  n_timesteps: 10\n  policy: MlpPolicy\n"
                   "  policy_kwargs: \"dict(net_arch=[8])\"\n")
    with pytest.raises(ConfigError, match="policy_kwargs: give a mapping"):
        sb3.load_agent_spec(bad)
    with pytest.raises(ConfigError, match="unknown agent"):
        sb3.algo_class("ddpg")


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_trained_saved_loaded_model_acts_exactly_as_trained(tmp_path, md, algo):
    override = TINY if algo == "ppo" else {"learning_starts": 32, "buffer_size": 1000,
                                           "batch_size": 32}
    final = cfg()
    final.train.evaluate_model = "final"
    model = sb3.train(spec(algo, **override), final, md, tmp_path, seed=1, timesteps=256,
                      progress=False)
    policy = sb3.load_policy(tmp_path)
    env = env_for(policy, cfg(), md)
    obs, info = env.reset(seed=0, options={"start": 500, "end": 560})
    acts_as_model(policy, model, env, obs, info, 40)
    for name in ("model.zip", "vecnormalize.pkl", "config.yaml", "agent.yaml",
                 "manifest.json"):
        assert (tmp_path / name).exists(), name
    tags = scalars(tmp_path)
    for key in ("equity", "return", "sharpe", "max_drawdown", "turnover", "costs"):
        assert f"portfolio/{key}" in tags
    # the deterministic policy's validation return beside the sampled training return
    assert "eval/mean_reward" in tags
    if algo == "ppo":  # SAC logs rollout statistics every 4 episodes: too few here
        assert "rollout/ep_rew_mean" in tags
    result = rollout(policy, env, window=(900, 1000), seed=0)
    assert result.metrics["bars"] == 100


def test_the_evaluated_model_is_the_best_on_validation_with_its_own_statistics(tmp_path, md):
    """train.evaluate_model: best (the default): the manifest names best/best_model.zip, whose
    validation return is the highest in eval/evaluations.npz (the last model is evaluated too),
    and load_policy reads the normalisation statistics saved with it."""
    import json
    import pickle

    sb3.train(spec("ppo", **TINY), cfg(), md, tmp_path, seed=3, timesteps=640, progress=False)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["model"] == "best/best_model.zip"
    ev = np.load(tmp_path / "eval" / "evaluations.npz")
    assert ev["timesteps"][-1] == man["timesteps"] and len(ev["timesteps"]) >= 5
    policy = sb3.load_policy(tmp_path)
    with open(tmp_path / "best" / "vecnormalize.pkl", "rb") as fh:
        best_stats = pickle.load(fh)
    np.testing.assert_array_equal(policy.normalizer.obs_rms["market"].mean,
                                  best_stats.obs_rms["market"].mean)
    env = env_for(policy, cfg(), md)
    start, stop = man["windows"]["validation"]
    r = rollout(policy, env, window=(start, stop - 1), seed=0)
    assert np.log(r.equity.iloc[-1] / r.equity.iloc[0]) == pytest.approx(
        ev["results"].mean(axis=1).max(), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("algo", ["a2c", "td3", "dqn", "recurrent_ppo"])
def test_other_agents_train_and_evaluate(tmp_path, md, algo):
    override = {"a2c": {"n_steps": 8},
                "td3": {"learning_starts": 32, "buffer_size": 1000, "batch_size": 32},
                "dqn": {"learning_starts": 32, "buffer_size": 1000, "batch_size": 32},
                "recurrent_ppo": TINY}[algo]
    sb3.train(spec(algo, **override), cfg(), md, tmp_path, seed=0, timesteps=128,
              progress=False)
    policy = sb3.load_policy(tmp_path)
    env = env_for(policy, cfg(), md)
    r = rollout(policy, env, window=(900, 960), seed=0)
    assert r.steps == 60
    if algo == "dqn":  # trained and evaluated in the single scheme, from the manifest
        assert env.unwrapped.config.env.action_scheme == "single"


def test_resume_continues_the_same_tensorboard_run(tmp_path, md):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    s = spec("ppo", **TINY)
    sb3.train(s, cfg(), md, tmp_path, seed=0, timesteps=256, progress=False)
    sb3.train(s, cfg(), md, tmp_path, seed=0, timesteps=512, resume=tmp_path, progress=False)
    runs = glob.glob(str(tmp_path / "tb" / "*"))
    assert len(runs) == 1
    steps = []
    for f in sorted(glob.glob(runs[0] + "/events*")):
        ea = EventAccumulator(f)
        ea.Reload()
        steps += [e.step for e in ea.Scalars("time/fps")]
    assert max(steps) >= 512 and min(steps) <= 256
    import json

    assert json.loads((tmp_path / "manifest.json").read_text())["timesteps"] >= 512


def test_mlp_policy_switches_to_the_flat_observation(md):
    s = spec("ppo")
    s.policy = "MlpPolicy"
    assert sb3.training_config(cfg(), s).env.observation == "flat"
    c = cfg()
    c.env.action_scheme = "discrete"
    with pytest.raises(ConfigError, match="continuous"):
        sb3.training_config(c, spec("sac"))
    # DQN's one Discrete space: the single scheme, whatever the config says
    assert sb3.training_config(c, spec("dqn")).env.action_scheme == "single"


def test_windows_are_apart(md):
    w = sb3.split_windows(md, cfg())
    assert w["train"].stop + 40 == w["validation"].start
    assert w["validation"].stop + 40 == w["test"].start
    assert w["test"].stop == md.n_bars


def test_an_rl_zoo3_run_folder_is_a_policy_and_the_zoo_callback_logs_portfolio_scalars(
        tmp_path):
    """A run folder in rl_zoo3's layout (logs/<algo>/<env>_<id>/: <env>.zip, <env>/args.yml
    with env_kwargs, config.yml, vecnormalize.pkl; OrderedDicts dumped as the zoo dumps
    them), trained the way the zoo trains: gym.make with env_kwargs, VecNormalize, the
    callback named in the hyperparameters. rl_zoo3 itself would downgrade pillow and
    python-dateutil here, so the folder is written by this test."""
    import subprocess
    import sys
    from collections import OrderedDict

    import gymnasium as gym
    import yaml
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    import ffe_gym  # noqa: F401  (registers ffe/Portfolio-v0)
    from ffe_gym.evaluation import resolve_policy

    config = tmp_path / "env.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"source": "synthetic", "synthetic": {"n_assets": 3, "n_bars": 1200,
                                                      "seed": 2}},
        "risk": {"on_portfolio_stop": "flat"}, "env": {"window": 8, "episode_bars": 50}}))
    env_kwargs = {"config": str(config)}
    venv = VecNormalize(make_vec_env(lambda: gym.make("ffe/Portfolio-v0", **env_kwargs),
                                     n_envs=2, seed=0))
    model = PPO("MultiInputPolicy", venv, seed=0, device="cpu", tensorboard_log=str(tmp_path),
                policy_kwargs={"net_arch": [16]}, **TINY)
    model.learn(128, callback=sb3.PortfolioScalars(), tb_log_name="zoo")
    run = tmp_path / "logs" / "ppo" / "ffe-Portfolio-v0_1"
    stats = run / "ffe-Portfolio-v0"
    stats.mkdir(parents=True)
    model.save(run / "ffe-Portfolio-v0.zip")
    venv.save(str(stats / "vecnormalize.pkl"))
    with open(stats / "args.yml", "w") as f:
        yaml.dump(OrderedDict([("algo", "ppo"), ("env", "ffe/Portfolio-v0"),
                               ("env_kwargs", env_kwargs), ("n_timesteps", 128),
                               ("seed", 0)]), f)
    with open(stats / "config.yml", "w") as f:
        yaml.dump(OrderedDict([("callback", "ffe_agents.sb3.PortfolioScalars"),
                               ("n_envs", 2), ("normalize", True),
                               ("policy", "MultiInputPolicy")]), f)
    assert "!!python/object/apply:collections.OrderedDict" in (stats / "args.yml").read_text()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(glob.glob(str(tmp_path / "zoo_*"))[0])
    ea.Reload()
    assert {"portfolio/return", "portfolio/sharpe", "portfolio/max_drawdown"} <= \
        set(ea.Tags()["scalars"])

    policy = resolve_policy(str(run))
    assert isinstance(policy, sb3.SB3Policy) and policy.normalizer is not None
    env = env_for(policy, config)
    obs, info = env.reset(seed=0, options={"start": 500, "end": 540})
    acts_as_model(policy, model, env, obs, info, 20)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--policy",
                          str(run), "--config", str(config), "--start", "500", "--end", "600",
                          "--no-progress"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ppo:ffe-Portfolio-v0_1" in out.stdout
    (stats / "args.yml").write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not an rl_zoo3 file"):
        resolve_policy(str(run))
