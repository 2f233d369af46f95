"""SB3VecEnv: stable-baselines3's VecEnv over a PortfolioVectorEnv (no subprocesses).

SB3 resets a sub-environment in the step that ends its episode and reports the last
observation as ``infos[i]["terminal_observation"]`` with ``infos[i]["TimeLimit.truncated"]``;
this adapter runs the vector env in ``SAME_STEP`` mode and translates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from ffe_gym.config import Config
from ffe_gym.data import MarketData
from ffe_gym.env.vector_env import PortfolioVectorEnv


class SB3VecEnv(VecEnv):
    """n books of ``ffe/Portfolio-v0`` as one SB3 ``VecEnv``.

    :param num_envs: n.
    :param config: as for :class:`~ffe_gym.env.PortfolioEnv`.
    :param data: as for :class:`~ffe_gym.env.PortfolioEnv`.
    :param options: reset options used for every reset and autoreset (e.g. a fixed
        validation window ``{"start": ..., "end": ...}``); SB3's ``set_options`` applies to
        the next reset only.
    :param threads: numba threads the books are split over (``PortfolioVectorEnv``'s
        ``threads``: an integer, or ``"auto"`` to use them only while they are measured
        faster).
    """

    def __init__(self, num_envs: int = 1, config: Config | Mapping | str | Path | None = None,
                 data: MarketData | str | Path | None = None,
                 options: Mapping[str, Any] | None = None, threads: int | str = 1) -> None:
        self.venv = PortfolioVectorEnv(num_envs, config, data,
                                       autoreset_mode=AutoresetMode.SAME_STEP,
                                       step_info=False, threads=threads)
        self.default_options = dict(options) if options else None
        super().__init__(num_envs, self.venv.single_observation_space,
                         self.venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> Any:
        seeds = list(self._seeds)
        options = [o or self.default_options for o in self._options]
        obs, info = self.venv.reset(seed=seeds if any(s is not None for s in seeds) else None,
                                    options=options)
        self.reset_infos = [{} for _ in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> tuple[Any, np.ndarray, np.ndarray, list[dict]]:
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            final = info["final_obs"]
            infos[i]["terminal_observation"] = (
                {k: v[i] for k, v in final.items()} if isinstance(final, dict) else final[i])
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            infos[i]["portfolio"] = {k: float(v[i]) for k, v in info["portfolio_episode"].items()}
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "render_mode":
            return [None for _ in self._indices(indices)]
        value = getattr(self.venv, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"SB3VecEnv shares one engine across books; cannot set "
                             f"{attr_name!r} per book")

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper],
                       indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]
