"""ffe_agents: policies that act on ffe-gym environments (installed from the folder agents/).

Baselines, stable-baselines3 agents and the LLM ensemble arrive here; ``ffe_agents`` imports
``ffe_gym``, never the reverse.
"""
