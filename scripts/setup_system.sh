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
  # Wait for another apt/dpkg process (unattended-upgrades, a parallel setup) instead of failing.
  lock=(-o DPkg::Lock::Timeout=600)
  # Older apt doesn't wait for the package lists' own lock on update: retry while it's held.
  for attempt in $(seq 60); do
    if err=$(apt-get "${lock[@]}" update -qq 2>&1 >/dev/null); then break; fi
    if [[ $err != *"Could not get lock"* || $attempt -eq 60 ]]; then echo "$err" >&2; exit 1; fi
    sleep 10
  done
  DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "system packages ok: bwrap $(bwrap --version | awk '{print $2}'), $(chromium --version 2>/dev/null | head -1)"
