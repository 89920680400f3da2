#!/usr/bin/env bash
# Install llama.cpp (llama-cpp-python, compiled from source) into its own runtime virtualenv.
# The first build takes about 15 minutes on two cores; the wheel is cached by its build flags
# (under ~/.cache/evallab/wheels), so later installs take seconds. Idempotent.
#   LLAMACPP_VERSION      version to install (default 0.3.36)
#   EVALLAB_RUNTIMES_DIR  where runtime virtualenvs live (default <repo>/.venvs/runtimes)
#   extra arguments are passed on, e.g. --build-env "CMAKE_ARGS=-DGGML_CUDA=on"
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${LLAMACPP_VERSION:-0.3.36}"
export EVALLAB_RUNTIMES_DIR="${EVALLAB_RUNTIMES_DIR:-$repo/.venvs/runtimes}"
python="${EVALLAB_PYTHON:-$repo/.venv/bin/python}"
exec "$python" -m evallab.cli runtime install "llamacpp==$version" "$@"
