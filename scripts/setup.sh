#!/usr/bin/env bash
# Set up .venv with ffe-gym, its test tools, the LLM extra, Ray and the classic baselines' solvers
# (skfolio). Safe to run again.
#
# torch==2.13.0 first: a CPU wheel (another version may pull several GB of CUDA).
# llama-cpp-python is compiled from source once per machine, with portable CPU flags
# (AVX2/FMA; no AVX-512/AMX: a native build crashed in llama_decode on a CPU with AMX), into a
# wheel folder keyed by version and flags. pip's own cache is keyed by the source archive only,
# so it could hand back a wheel built with other flags; this folder cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_VERSION=0.3.36
LLAMA_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
WHEELS="${FFE_GYM_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/ffe-gym/wheels}/llama-${LLAMA_VERSION}-$(printf '%s' "$LLAMA_FLAGS" | sha256sum | cut -c1-12)"

python3 -m venv .venv
. .venv/bin/activate
pip install -q torch==2.13.0
if ! ls "$WHEELS"/llama_cpp_python-*.whl > /dev/null 2>&1; then
  echo "setup: compiling llama-cpp-python $LLAMA_VERSION (llama.cpp, C++) once for this machine" \
       "on $(nproc) cores, portable CPU flags; about 5-15 minutes, kept in $WHEELS"
  mkdir -p "$WHEELS"
  started=$(date +%s)
  CMAKE_ARGS="$LLAMA_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    pip wheel -q --no-cache-dir --no-deps -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
  echo "setup: llama-cpp-python compiled in $(( $(date +%s) - started )) s"
fi
echo "setup: installing ffe-gym with its dev, llm, ray and classic extras"
pip install -q "$(ls "$WHEELS"/llama_cpp_python-*.whl | head -n 1)[server]"
pip install -q -e ".[dev,llm,ray,classic]"
if [ "${FFE_GYM_NO_RLLIB:-0}" != 1 ]; then
  echo "setup: RLlib in its own environment (.venv-rllib; ray[rllib] pins gymnasium 1.2.2)"
  bash scripts/setup_rllib.sh
fi
