#!/usr/bin/env bash
# System packages the test suite needs: bubblewrap (code sandbox), chromium (report page tests),
# util-linux setpriv (drop privileges). Idempotent; installs only what is missing.
set -euo pipefail
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v chromium >/dev/null || need+=(chromium)
command -v setpriv >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing system packages: ${need[*]} (run: sudo apt-get install -y ${need[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "system packages ok: bwrap $(bwrap --version | awk '{print $2}'), $(chromium --version 2>/dev/null | head -1)"
