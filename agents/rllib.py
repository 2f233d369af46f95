"""An RLlib checkpoint as a policy for ``evaluate`` and ``compare``.

``scripts/rllib_ppo.py --out DIR`` writes RLlib's checkpoint (``DIR/checkpoint``) and
``DIR/ffe-rllib.json``: the env config it trained with, the algorithm, and the interpreter that
has RLlib. :class:`RLlibPolicy` reads that folder (``evaluate --policy DIR`` resolves it through
:func:`ffe_agents.sb3.load_policy`) and acts with the saved RLModule's deterministic action
(the mean of its Gaussian, clipped to the Box, as RLlib's env runner unsquashes it for a
``[-1, 1]`` space).

ray[rllib] pins an older gymnasium than the project's, so it usually lives in its own
environment (``.venv-rllib``). Where this interpreter cannot import RLlib, the module runs in a
child process of that environment (``python -m ffe_agents.rllib <module dir>``), which reads
observations and writes actions as length-prefixed float32 frames on its pipes; the
interpreter is ``python=`` if given, else ``$FFE_GYM_RLLIB_PYTHON``, else the one recorded in
``ffe-rllib.json``. Only the RLModule is applied: an env-to-module connector the training
added beyond RLlib's defaults (an observation filter) is not, and such a checkpoint is refused.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ffe_gym.evaluation.policy import PolicyBase, PolicyError

META = "ffe-rllib.json"
_ERROR = 0xFFFFFFFF  # a frame length that announces an error message instead of an action


def is_rllib_run(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


def _module_dir(folder: Path, meta: dict[str, Any]) -> Path:
    return (folder / meta.get("checkpoint", "checkpoint") / "learner_group" / "learner"
            / "rl_module" / meta.get("module", "default_policy"))


class RLlibPolicy(PolicyBase):
    """The RLModule of a folder written by ``scripts/rllib_ppo.py --out``.

    :param path: the folder (``ffe-rllib.json`` and ``checkpoint/``).
    :param python: an interpreter with ray[rllib] to run the module in (default: this one
        when it has RLlib, else ``$FFE_GYM_RLLIB_PYTHON``, else the one that trained it).
    :param name: the policy's name in tables (default ``rllib:<folder name>``).
    """

    deterministic = True

    def __init__(self, path: str | Path, python: str | None = None,
                 name: str | None = None) -> None:
        self.path = Path(path)
        try:
            self.meta = json.loads((self.path / META).read_text())
        except (OSError, ValueError) as exc:
            raise PolicyError(f"{self.path / META}: cannot read the RLlib run's record "
                              f"({exc})") from None
        self.module_dir = _module_dir(self.path, self.meta)
        if not self.module_dir.is_dir():
            raise PolicyError(f"{self.path}: no RLModule at {self.module_dir} (an RLlib "
                              "checkpoint saved by scripts/rllib_ppo.py --out)")
        self.name = name or f"rllib:{self.path.name}"
        self.python = python
        self._runner: Any = None

    def env_overrides(self) -> dict[str, Any]:
        return dict((self.meta.get("env_config", {}).get("config") or {}).get("env") or {})

    def reset(self, seed: int | None = None) -> None:
        if self._runner is None:
            self._runner = _in_process(self.module_dir) or _Child(self._interpreter(),
                                                                  self.module_dir)

    def _interpreter(self) -> str:
        for candidate in (self.python, os.environ.get("FFE_GYM_RLLIB_PYTHON"),
                          self.meta.get("python")):
            if candidate and Path(candidate).exists():
                return str(candidate)
        raise PolicyError(f"{self.path}: this interpreter has no RLlib and none was found to "
                          "run the checkpoint in; pass python=<.venv-rllib/bin/python> or set "
                          "FFE_GYM_RLLIB_PYTHON")

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        if self._runner is None:
            self.reset()
        obs = np.ascontiguousarray(observation, dtype=np.float32).ravel()
        return self._runner(obs)

    def close(self) -> None:
        if self._runner is not None and hasattr(self._runner, "close"):
            self._runner.close()
        self._runner = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_runner": None}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _in_process(module_dir: Path) -> Any:
    """An action function of the module in this interpreter, or None without RLlib."""
    try:
        import ray.rllib  # noqa: F401
    except ImportError:
        return None
    return _Module(module_dir)


class _Module:
    """The RLModule itself (in an interpreter that has RLlib)."""

    def __init__(self, module_dir: Path) -> None:
        import torch
        from ray.rllib.core.rl_module.rl_module import RLModule

        torch.set_num_threads(1)
        connector = module_dir.parents[3] / "env_runner" / "env_to_module_connector"
        if any(f.is_file() and b"MeanStdFilter" in f.read_bytes()
               for f in connector.glob("*.pkl")):
            raise PolicyError(f"{module_dir}: the checkpoint filters observations "
                              "(MeanStdFilter); only the RLModule is applied here")
        self.torch = torch
        self.module = RLModule.from_checkpoint(str(module_dir))
        self.module.eval()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            out = self.module.forward_inference({"obs": torch.from_numpy(obs[None])})
            dist = self.module.get_inference_action_dist_cls().from_logits(
                out["action_dist_inputs"])
            action = dist.to_deterministic().sample()[0].numpy()
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class _Child:
    """The module in a child process of another interpreter (``python -m ffe_agents.rllib``)."""

    def __init__(self, python: str, module_dir: Path) -> None:
        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        self.proc = subprocess.Popen([python, "-m", "ffe_agents.rllib", str(module_dir)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd=root)
        self.python = python
        self._check(self._frame())  # the worker says it loaded the module (or why not)

    def _frame(self) -> tuple[int, bytes]:
        try:
            return _read(self.proc.stdout)
        except EOFError:
            self.proc.wait()
            err = self.proc.stderr.read().decode(errors="replace")[-2000:]
            raise PolicyError(f"the RLlib worker ({self.python}) stopped: {err}") from None

    @staticmethod
    def _check(frame: tuple[int, bytes]) -> bytes:
        n, payload = frame
        if n == _ERROR:
            raise PolicyError(payload.decode(errors="replace"))
        return payload

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        try:
            _write(self.proc.stdin, obs.tobytes())
        except BrokenPipeError:
            pass  # it stopped: the frame read next says why
        return np.frombuffer(self._check(self._frame()), dtype=np.float32).copy()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


def _write(stream: Any, payload: bytes) -> None:
    stream.write(struct.pack("<I", len(payload)) + payload)
    stream.flush()


def _read(stream: Any) -> tuple[int, bytes]:
    head = stream.read(4)
    if len(head) < 4:
        raise EOFError
    (n,) = struct.unpack("<I", head)
    if n == _ERROR:
        (m,) = struct.unpack("<I", stream.read(4))
        return n, stream.read(m)
    return n, stream.read(n)


def worker(module_dir: str) -> int:
    """The child process: float32 observations in, float32 actions out, until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        module = _Module(Path(module_dir))
    except Exception as exc:
        message = f"cannot load the RLModule at {module_dir}: {exc}".encode()
        stdout.write(struct.pack("<II", _ERROR, len(message)) + message)
        stdout.flush()
        return 1
    _write(stdout, b"")  # loaded
    while True:
        try:
            _, payload = _read(stdin)
        except EOFError:
            return 0
        action = module(np.frombuffer(payload, dtype=np.float32))
        _write(stdout, action.tobytes())


if __name__ == "__main__":
    raise SystemExit(worker(sys.argv[1]))
