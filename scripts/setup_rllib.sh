#!/usr/bin/env bash
# A separate environment for RLlib (.venv-rllib): ray[rllib] 2.60 pins gymnasium 1.2.2, which
# must not downgrade the main .venv (gymnasium 1.4). Then: .venv-rllib/bin/python
# scripts/rllib_ppo.py (tests/test_rllib.py runs it when .venv-rllib exists).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-rllib
. .venv-rllib/bin/activate
pip install -q --no-compile torch==2.13.0
pip install -q --no-compile "ray[rllib]==2.60.0" -e .
python -c "import gymnasium, ray; print('rllib env: ray', ray.__version__, 'gymnasium', gymnasium.__version__)"
