"""Evaluation: the Policy protocol, rollouts and their results."""

from ffe_gym.evaluation.policy import REGISTRY, Policy, PolicyError, resolve_policy
from ffe_gym.evaluation.rollout import EpisodeResult, env_for, rollout

__all__ = ["REGISTRY", "EpisodeResult", "Policy", "PolicyError", "env_for", "resolve_policy",
           "rollout"]
