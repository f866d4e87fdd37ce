#!/usr/bin/env bash
# System packages the tests use for real (headless Chromium, PostgreSQL, a one-node Slurm with munge) and the C++ compiler the
# fused training kernel needs. Installed with apt-get when missing and running as root; otherwise the
# tests that need them skip with a reason (without a compiler, training falls back to torch.nn).
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v c++ >/dev/null 2>&1 || need+=(g++)
[ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
{ [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && command -v sbatch >/dev/null 2>&1; } || need+=(slurm-wlm)
[ -x /usr/sbin/munged ] || need+=(munge)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: ${need[*]} missing and cannot be installed here (need root and apt-get); those tests will skip"
  exit 0
fi
echo "installing ${need[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
  || echo "note: apt-get could not install ${need[*]}; those tests will skip"
exit 0
