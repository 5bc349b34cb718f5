#!/usr/bin/env bash
# The container runtime of the real test node (tests/cluster): Debian's containerd 1.6, runc, the
# CNI plugins and iptables (nf_tables backend, which kubelet and kube-proxy 1.20 drive). Their
# binaries (kubelet, kube-proxy) are built by kube.sh with the control plane.
#
# Only as root (the node needs root anyway). No service is started: Debian's policy-rc.d on
# these machines refuses it, and the harness runs its own containerd with a private config,
# root, state and socket. Set L7SCOPE_SKIP_KUBE_BUILD=1 to skip (the cluster tests then skip).
set -euo pipefail

say() { printf '\033[1;34m[setup node]\033[0m %s\n' "$*"; }

PACKAGES=(containerd runc containernetworking-plugins iptables)

if [ "${L7SCOPE_SKIP_KUBE_BUILD:-0}" = 1 ]; then
  say "skipped (L7SCOPE_SKIP_KUBE_BUILD=1)"
  exit 0
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  say "container runtime packages installed"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "WARNING: not root; missing ${missing[*]} (the cluster tests will skip)"
  exit 0
fi
say "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
