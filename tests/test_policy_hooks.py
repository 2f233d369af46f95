"""Every hook the project calls on a policy is declared, with its default, in PolicyBase."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ffe_gym
from ffe_gym.evaluation.policy import HOOKS, REGISTRY, PolicyBase, _load, env_overrides, hook


class Bare:
    """A policy with nothing but the protocol: every optional hook takes its default."""

    name = "bare"

    def reset(self, seed=None):
        pass

    def act(self, observation, info):
        return 0


def test_every_hook_the_project_looks_up_is_declared():
    root = Path(ffe_gym.__file__).parent
    used = set()
    for path in root.rglob("*.py"):
        used |= set(re.findall(r"\bhook\([^,()]+, \"(\w+)\"\)", path.read_text()))
    assert used and used <= HOOKS, used - HOOKS
    assert not [p for p in root.rglob("*.py") if re.search(
        r"(getattr|hasattr)\((policy|cls)\b", p.read_text()) and p.name != "policy.py"]


def test_a_bare_policy_gets_every_default_and_unknown_hooks_are_refused():
    p = Bare()
    assert env_overrides(p) == {} and hook(p, "stats")() == {} and hook(p, "close")() is None
    assert hook(p, "bind_market") is None and hook(Bare, "deterministic") is False
    assert hook(Bare, "carry_state")() == {} and hook(Bare, "identity_digests")() == {}
    assert hook(Bare, "takes_out") is False and hook(p, "call_log") is None
    with pytest.raises(AttributeError, match="not a policy hook"):
        hook(p, "bindd")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_policy_is_a_policy_base(name):
    cls = _load(REGISTRY[name])
    assert issubclass(cls, PolicyBase)
    for attr in ("carry_state", "merge_carried", "identity_digests"):  # class-level hooks
        assert isinstance(getattr(cls, attr), type(PolicyBase.carry_state)), (name, attr)


def test_the_readme_minimal_policy_runs():
    from ffe_gym.config import Config
    from ffe_gym.data import synthetic_market
    from ffe_gym.evaluation import env_for, rollout
    from ffe_gym.evaluation.experiment import reference_config

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
                 if "class Inverse(PolicyBase)" in b)
    space: dict = {}
    exec(block, space)
    policy = space["Inverse"]()
    md = synthetic_market(3, 600, seed=1)
    assert rollout(policy, env_for(policy, Config(), md), window=(300, 400), seed=0).steps == 100
    free = reference_config(Config())  # no limit in the way: the book follows the targets
    result = rollout(policy, env_for(policy, free, md), window=(300, 400), seed=0)
    held = result.weights.iloc[1:].mean()
    assert held.iloc[0] > held.iloc[1] > held.iloc[2] > 0  # 6/11, 3/11, 2/11


def test_an_action_of_the_wrong_shape_names_the_policy_not_the_data(tmp_path):
    # a weights policy that forgot env_overrides(): the env is built for signals, and the
    # error says which policy returned what, and how to declare the scheme
    import subprocess
    import sys

    import numpy as np

    from ffe_gym.config import Config
    from ffe_gym.data import synthetic_market
    from ffe_gym.evaluation import PolicyError, env_for, rollout

    class Forgetful(PolicyBase):
        name = "forgetful"

        def act(self, observation, info):
            return np.full(len(info["weights"]) + 1, 0.25, dtype=np.float32)

    md = synthetic_market(3, 600, seed=1)
    policy = Forgetful()
    with pytest.raises(PolicyError, match=r"policy 'forgetful' returned an action of shape "
                                          r"\(4,\) at decision 0; the env's 'signals' scheme "
                                          r"takes \(3,\).*env_overrides\(\)"):
        rollout(policy, env_for(policy, Config(), md), window=(300, 400), seed=0)
    # through the command: one line naming the policy, no data file blamed
    module = tmp_path / "forgetful_policy.py"
    module.write_text("import numpy as np\nfrom ffe_gym.evaluation.policy import PolicyBase\n"
                      "class Forgetful(PolicyBase):\n    name = 'forgetful'\n"
                      "    def act(self, observation, info):\n"
                      "        return np.full(len(info['weights']) + 1, 0.25, dtype=np.float32)\n")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "scripts/evaluate.py", "--policy",
                        "forgetful_policy:Forgetful", "--no-progress"], cwd=root,
                       capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert r.returncode != 0
    assert "policy 'forgetful' returned an action of shape (6,)" in r.stderr, r.stderr
    assert "file " not in r.stderr and "Traceback" not in r.stderr
